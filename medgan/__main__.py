"""``python -m medgan``: the ``medgan`` command, also what ``torchrun ... -m medgan train-sr CONFIG`` starts per rank.

The command lives in the top-level ``pipelines`` package installed beside ``medgan``. ``python -m`` (and torchrun)
put the current folder first on ``sys.path``, and a ``pipelines/`` package of the user's own there (common in ML
projects) would be imported instead: ``python -m pipelines.cli`` then fails with a foreign error. Here
``pipelines`` is bound to the one beside this ``medgan`` before it is imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _bind_own_pipelines() -> None:
    """Import ``pipelines`` from the folder that holds this ``medgan`` package, whatever ``sys.path`` says first."""
    if "pipelines" in sys.modules:  # imported already (medgan run from Python): that one stays
        return
    init = Path(__file__).resolve().parents[1] / "pipelines" / "__init__.py"
    if not init.is_file():  # installed apart from medgan: the ordinary import finds it
        return
    spec = importlib.util.spec_from_file_location("pipelines", init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipelines"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["pipelines"]
        raise


def main() -> int:
    """Run the ``medgan`` command on ``sys.argv``; return its exit status."""
    _bind_own_pipelines()
    from pipelines.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

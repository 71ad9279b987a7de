"""The README's Python example runs as written (from the repository root, with the shipped models)."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(REPO)
    code = code.replace('"out/sr.nii.gz"', repr(str(tmp_path / "sr.nii.gz")))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["sr"].shape == namespace["scan"].shape
    assert namespace["images"].shape[0] == 4
    assert (tmp_path / "sr.nii.gz").is_file()

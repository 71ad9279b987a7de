"""The README's Python example runs as written (from the repository root, with the shipped models)."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    # as written, from a folder that has sample_data/ like a fresh checkout and no out/ yet
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["sr"].shape == namespace["scan"].shape
    assert namespace["images"].shape[0] == 4
    assert (tmp_path / "out" / "sr.nii.gz").is_file()


def test_public_api_docstring_examples_run(tmp_path, monkeypatch):
    """The numpy-docstring Examples of the public API (``help(medgan)``) run as written: every example not marked
    ``+SKIP`` gives the output its docstring shows. Nothing else runs them (no ``--doctest-modules``)."""
    import doctest
    import importlib

    import medgan

    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    monkeypatch.chdir(tmp_path)
    attempted = 0
    for name in sorted(set(medgan._LAZY.values())):
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
        assert result.failed == 0, f"{name}: {result.failed} docstring example(s) fail (python -m doctest -v)"
        attempted += result.attempted
    assert attempted >= 20  # the examples of save_scan, degrade, interpolate, evaluate, list_pretrained, ...


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}


def _subparsers(parser) -> dict:
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_documented_command_options_are_the_real_ones():
    """The README's per-command option notes name options each command has, and docs/BATCH.md's synopsis lists
    exactly the options of ``medgan batch upscale|synthesize|evaluate`` and ``medgan run``."""
    from pipelines import cli

    commands = _subparsers(cli.build_parser())
    text = (REPO / "README.md").read_text()
    notes = text[text.index("Options beyond the lines above") : text.index("## Data")]
    checked = 0
    for bullet in re.split(r"\n- ", notes)[1:]:
        head, _, body = bullet.partition(":")
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-n)\b", body))
        for name in re.findall(r"`([a-z-]+)`", head):
            missing = flags - _options(commands[name]) - {"--help"}
            assert not missing, f"README names {sorted(missing)} for `medgan {name}`, which has no such option"
            checked += 1
    assert checked >= 10

    batch = (REPO / "docs" / "BATCH.md").read_text()
    synopsis = batch[batch.index("```\nmedgan batch upscale") + 4 :]
    synopsis = synopsis[: synopsis.index("```")]
    jobs = _subparsers(commands["batch"])
    blocks = re.split(r"\n(?=medgan )", synopsis.strip())
    assert len(blocks) == 4  # batch upscale, batch synthesize, batch evaluate, run
    for block in blocks:
        words = block.split()
        parser = jobs[words[2]] if words[1] == "batch" else commands[words[1]]
        documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-n)\b", block))
        assert documented == _options(parser), f"docs/BATCH.md synopsis of `{' '.join(words[:3])}`"

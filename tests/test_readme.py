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

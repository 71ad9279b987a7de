"""``medgan demo``'s default sample data: the checkout's own ``sample_data/`` first; ``./sample_data`` only when
the package has none (installed from a wheel)."""

from __future__ import annotations

import shutil

from conftest import REPO, SAMPLE_DATA

from pipelines.demo import default_data_dir


def test_the_checkouts_own_sample_data_wins_over_the_current_folders(tmp_path, monkeypatch):
    # another checkout's (older) sample_data in the current folder: the demo read it instead of its own
    other = tmp_path / "sample_data"
    other.mkdir()
    shutil.copy(SAMPLE_DATA / "MANIFEST.json", other / "MANIFEST.json")
    monkeypatch.chdir(tmp_path)
    assert default_data_dir(REPO) == REPO / "sample_data"
    # a package root without sample_data (an installed wheel): the current folder's
    assert default_data_dir(tmp_path / "site-packages") == tmp_path / "sample_data"

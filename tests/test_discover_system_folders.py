"""System folders (``lost+found``, ``System Volume Information``, recycle bins, hidden folders) are skipped by
discovery, not reported as unusable; any other folder that cannot be listed is still an unusable ScanRef of kind
``"folder"``, whose ``n_files`` (and a batch row's ``n_inputs``) is 0.

Real trees: a DICOM series and a NIfTI file copied from ``sample_data/``. Folders made unlistable with ``chmod 000``
only stay unlistable for a process without the capabilities that bypass file permissions: as root (CI), the checks
run in a subprocess under util-linux's ``setpriv`` with those capabilities dropped (as ``tests/test_discover.py``
does), and are skipped where that cannot be done.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_sr

from medgan.io.discover import SKIP_FOLDERS, discover_scans
from tests.conftest import permissions_apply

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
SERIES = SAMPLE / "dicom" / "dicom2nifti_hitachi_anatomical_001"
NIFTI = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
SYSTEM_NAMES = ["lost+found", "System Volume Information", "$RECYCLE.BIN", "$Recycle.Bin", "RECYCLER"]
HIDDEN_NAMES = [".Trashes", ".Spotlight-V100", ".fseventsd"]


def _run(prefix: list[str], code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


_DISCOVER = (
    "import json, logging, sys, medgan\n"
    "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')\n"
    "print(json.dumps([r.to_dict() for r in medgan.discover_scans(sys.argv[1])]))\n"
)


def _tree(root: Path) -> Path:
    """A real series under ``scans_a/t1`` and a real NIfTI under ``scans_a/nii``."""
    shutil.copytree(SERIES, root / "scans_a" / "t1")
    (root / "scans_a" / "nii").mkdir(parents=True)
    shutil.copy(NIFTI, root / "scans_a" / "nii" / "anatomical.nii")
    return root


def test_skip_folders_are_lower_case_names():
    assert all(name == name.casefold() for name in SKIP_FOLDERS)
    assert {"lost+found", "system volume information", "$recycle.bin"} <= SKIP_FOLDERS


def test_system_and_hidden_folders_holding_scans_are_skipped_with_a_debug_line(tmp_path, caplog):
    """Listable or not, a system folder is never a scan folder: the scans copied into one are not listed."""
    root = _tree(tmp_path / "disk")
    for name in SYSTEM_NAMES + HIDDEN_NAMES:
        shutil.copytree(SERIES, root / name / "series")
        shutil.copy(NIFTI, root / name / "anatomical.nii")
    shutil.copytree(SERIES, root / "scans_a" / "lost+found")  # a nested one is skipped too
    with caplog.at_level(logging.DEBUG, logger="medgan.io.discover"):
        refs = discover_scans(root)
    assert sorted((r.kind, r.paths[0].parent.relative_to(root).as_posix()) for r in refs) == [
        ("dicom-series", "scans_a/t1"),
        ("nifti", "scans_a/nii"),
    ]
    assert all(r.usable for r in refs)
    assert [r.n_files for r in sorted(refs, key=lambda r: r.kind)] == [len(list(SERIES.iterdir())), 1]
    skipped = {Path(r.getMessage().split(" ", 3)[-1]).name for r in caplog.records if "system folder" in r.getMessage()}
    assert skipped == {*SYSTEM_NAMES, "lost+found"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_system_folder_walked_itself_is_walked(tmp_path):
    """Skipping applies below the folder walked: ``medgan info /mnt/disk/lost+found`` still lists what is there."""
    shutil.copytree(SERIES, tmp_path / "lost+found" / "t1")
    (ref,) = discover_scans(tmp_path / "lost+found")
    assert ref.usable and ref.kind == "dicom-series" and ref.n_files == len(list(SERIES.iterdir()))


def test_an_unlistable_lost_found_is_skipped_but_an_unlistable_user_folder_is_a_folder_ref(tmp_path):
    """A data disk's ``lost+found`` (root's, mode 700) made every batch over the disk end with exit 3 and an unusable
    "folder" ref; it is skipped now. A folder of the user's that cannot be listed is still reported."""
    root = _tree(tmp_path / "disk")
    lost, user = root / "lost+found", root / "scans_b"
    shutil.copytree(SERIES, lost / "series")
    user.mkdir()
    shutil.copy(NIFTI, user / "b.nii")
    for folder in (lost, user):
        folder.chmod(0)
    try:
        prefix = permissions_apply(lost)
        both = _run(prefix, _DISCOVER, root)
        user.chmod(0o755)
        shutil.rmtree(user)
        lost_only = _run(prefix, _DISCOVER, root)
    finally:
        lost.chmod(0o755)
        if user.exists():
            user.chmod(0o755)
    assert both.returncode == 0, both.stderr
    assert lost_only.returncode == 0, lost_only.stderr

    refs = {r["kind"]: r for r in json.loads(both.stdout)}
    assert sorted(refs) == ["dicom-series", "folder", "nifti"]  # nothing of lost+found
    assert refs["dicom-series"]["usable"] and refs["nifti"]["usable"]
    folder = refs["folder"]
    assert folder["paths"] == [str(user)] and not folder["usable"] and folder["n_files"] == 0
    assert folder["reason"].startswith(f"cannot list this folder ({os.strerror(errno.EACCES)})")
    warnings = [line for line in both.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "cannot list folder" in warnings[0] and str(user) in warnings[0]
    assert f"DEBUG medgan.io.discover skipped system folder {lost}" in both.stderr.splitlines()

    refs = json.loads(lost_only.stdout)
    assert sorted(r["kind"] for r in refs) == ["dicom-series", "nifti"] and all(r["usable"] for r in refs)
    assert not [line for line in lost_only.stderr.splitlines() if line.startswith("WARNING")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny 3-D SRResNet (x2 in-plane) saved as a real medgan checkpoint (as in tests/test_batch.py)."""
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


_BATCH = "import sys\nfrom pipelines.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def test_batch_over_a_disk_with_lost_found_is_all_done_and_a_folder_row_counts_no_input(tmp_path, tiny_model):
    """``medgan batch upscale`` over a mounted data disk: its unlistable ``lost+found`` no longer makes the run exit 3;
    an unlistable user folder still does, and its manifest row says ``n_inputs`` 0 (it said 1: the folder itself)."""
    from pipelines.batch.manifest import read_rows

    root = tmp_path / "disk"
    shutil.copytree(SERIES, root / "scans_a" / "t1")
    lost, user = root / "lost+found", root / "scans_b"
    lost.mkdir()
    shutil.copy(NIFTI, lost / "recovered.nii")
    user.mkdir()
    shutil.copy(NIFTI, user / "b.nii")
    lost.chmod(0)
    try:
        prefix = permissions_apply(lost)
        args = ["batch", "upscale", "--model", str(tiny_model), "--quiet"]
        lost_only = _run(prefix, _BATCH, args[0], args[1], root, tmp_path / "out1", *args[2:])
        user.chmod(0)
        both = _run(prefix, _BATCH, args[0], args[1], root, tmp_path / "out2", *args[2:])
    finally:
        lost.chmod(0o755)
        user.chmod(0o755)
    n_series = len(list(SERIES.iterdir()))

    assert lost_only.returncode == 0, lost_only.stderr
    rows = read_rows(tmp_path / "out1" / "manifest.jsonl")
    assert sorted((r["input"], r["status"], r["n_inputs"]) for r in rows) == [
        ("scans_a/t1", "done", n_series),
        ("scans_b/b.nii", "done", 1),
    ]

    assert both.returncode == 3, both.stderr
    rows = read_rows(tmp_path / "out2" / "manifest.jsonl")
    assert sorted((r["input"], r["kind"], r["status"], r["n_inputs"]) for r in rows) == [
        ("scans_a/t1", "dicom-series", "done", n_series),
        ("scans_b", "folder", "unusable", 0),
    ]
    assert all("lost+found" not in json.dumps(r) for r in rows)

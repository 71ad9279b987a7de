"""File-system failures (review 24): a full disk, a deleted output folder, a folder in the way, a shared output tree.

1. A failed ``medgan evaluate --overwrite`` left the new ``metrics.csv`` beside the earlier run's ``report.html``
   (each file was renamed into place on its own); its error named a hidden temporary file.
2. Deleting the output folder during a batch: the run made it again (``mkdir(parents=True)``) and kept appending
   rows to the deleted manifest; now it stops with one line and makes nothing again.
3. A batch start deleted the temporary files of another medgan command writing into the same tree, and a
   subfolder with a lock file nobody held was never swept.
4. A full disk during ``save_state`` was a 40-line traceback ending in torch's "unexpected pos".
5. A full disk while pydicom wrote pixel data put pydicom's formatted traceback into the error message.
6. A newline in a folder name split the batch's ``done`` log line in two (a forged log line).

Disk-full failures are made without root or a small file system: a subprocess that ignores SIGXFSZ and sets
RLIMIT_FSIZE gets ``EFBIG`` ("File too large") from the first write past the limit, as a full disk gives
``ENOSPC``. Real data only (``sample_data/``); models are untrained tiny ones saved with the real checkpoint API.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA, cli_env, save_tiny_sr

from medgan.errors import MedganError
from pipelines.batch.manifest import Manifest, read_rows
from pipelines.cli import main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
MNI_T1 = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


def _tree(root: Path, *folders: str) -> Path:
    """The real ``anatomical.nii`` once in each of ``folders`` under ``root``."""
    for folder in folders:
        (root / folder).mkdir(parents=True)
        shutil.copy(ANAT, root / folder / "anat.nii")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _file_size_limited(code: str, tmp_path: Path, limit: int = 60_000) -> subprocess.CompletedProcess:
    """Run ``code`` (after the limit is set) in a Python subprocess whose files cannot grow past ``limit`` bytes."""
    script = textwrap.dedent(
        f"""
        import json, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        import numpy as np, torch  # imported before the limit: nothing of theirs is written after it
        from medgan.errors import MedganError
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        """
    ) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240
    )


# ------------------------------------------------------------------ 1: a failed report leaves the earlier one whole


def test_a_failed_evaluate_overwrite_leaves_the_earlier_report_as_it_was(tmp_path, capsys):
    ref = shutil.copy(ANAT, tmp_path / "ref.nii")
    img = nib.load(ref)
    pred = tmp_path / "pred.nii"  # another prediction: every metric differs from the first report's
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32) * 1.05 + 3.0, img.affine), pred)
    out = tmp_path / "report"
    common = ["--ref", str(ref), "--out", str(out), "--max-montages", "0"]
    assert main(["evaluate", "--pred", str(ref), *common]) == 0
    (out / "report.html").unlink()
    (out / "report.html").mkdir()  # in the way of the last file the report renames into place
    (out / "report.html" / "note.txt").write_text("kept\n")
    before = _files(out)
    capsys.readouterr()

    assert main(["evaluate", "--pred", str(pred), *common, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert _files(out) == before  # metrics.csv and every other file: the first run's bytes
    assert not [p for p in out.rglob(".*")]  # no temporary file or backup left
    lines = [line for line in err.splitlines() if "error:" in line]
    assert lines == [f"medgan evaluate: error: {out / 'report.html'}: cannot write the report (Is a directory)"]


# ------------------------------------------------------------------ 2: the output folder deleted during a run


def test_appending_to_a_deleted_manifest_stops_the_run(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as manifest:
        manifest.append({"scan_id": "a", "status": "done"})
        path.unlink()
        with pytest.raises(MedganError, match="deleted during the run") as exc:
            manifest.append({"scan_id": "b", "status": "done"})
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert [r["scan_id"] for r in manifest.rows] == ["a"]


class _DeleteAfterFirstDone(logging.Handler):
    """Deletes the output folder when the run logs its first finished scan (``scan 1/N ...: done``)."""

    def __init__(self, out_root: Path) -> None:
        super().__init__(logging.INFO)
        self.out_root = out_root
        self.deleted = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.deleted and record.getMessage().startswith("scan 1/") and ": done in" in record.getMessage():
            shutil.rmtree(self.out_root)
            self.deleted = True


def test_a_batch_whose_output_folder_is_deleted_stops_and_does_not_make_it_again(tmp_path, tiny_model):
    from pipelines.batch.runner import run_upscale

    src = _tree(tmp_path / "in", "s1", "s2", "s3")
    out = tmp_path / "out"
    hook = _DeleteAfterFirstDone(out)
    logger = logging.getLogger("medgan.batch")
    logger.addHandler(hook)
    try:
        with pytest.raises(MedganError, match="deleted during the run"):
            run_upscale(src, out, model=str(tiny_model), quiet=True, bar=False)
    finally:
        logger.removeHandler(hook)
    assert hook.deleted
    assert not out.exists()  # not made again for the second scan's folder, nothing written after the deletion


# ------------------------------------------------------------------ 3: the start-up sweep keeps others' temporary files


def _batch(src: Path, out: Path, model: Path) -> int:
    return main(["batch", "upscale", str(src), str(out), "--model", str(model), "--quiet"])


def test_a_batch_start_sweeps_only_temporary_files_of_its_own_outputs(tmp_path, tiny_model):
    src = _tree(tmp_path / "in", "s1", "sub")
    out = tmp_path / "out"
    assert _batch(src, out, tiny_model) == 0
    rows = read_rows(out / "manifest.jsonl")
    own = {Path(r["input"]).parent.name: Path(r["outputs"][0]) for r in rows}

    foreign = out / ".mine.nii.gz.0123456789ab.tmp"  # another command writing out/mine.nii.gz right now
    foreign.write_bytes(b"being written by medgan convert\n")
    foreign_dir = out / "s1" / ".t1dcm.0123456789ab.tmp"  # another command's DICOM series being written
    foreign_dir.mkdir()
    (foreign_dir / "slice_0001.dcm").write_bytes(b"slice\n")
    # what a run killed while writing its own outputs leaves: temporary siblings of names this job writes
    killed = [
        out / own["s1"].parent / f".{own['s1'].name}.0123456789ab.tmp",
        out / f".manifest.csv.{'a' * 12}.tmp",
    ]
    for path in killed:
        path.write_bytes(b"partial\n")

    assert _batch(src, out, tiny_model) == 0
    assert foreign.read_bytes() == b"being written by medgan convert\n"
    assert (foreign_dir / "slice_0001.dcm").read_bytes() == b"slice\n"
    assert [p.name for p in killed if p.exists()] == []
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")[2:]] == ["skipped", "skipped"]


def test_a_subfolder_with_a_lock_nobody_holds_is_swept(tmp_path, tiny_model):
    """A lock file left by a run into the subfolder that ended (or was killed) made the folder unswept forever."""
    src = _tree(tmp_path / "in", "sub")
    out = tmp_path / "out"
    assert _batch(src, out / "sub", tiny_model) == 0  # a run into the subfolder leaves its (unheld) lock file
    assert _batch(src, out, tiny_model) == 0
    output = Path(read_rows(out / "manifest.jsonl")[0]["outputs"][0])
    assert output.parts[0] == "sub" and (out / "sub" / ".medgan-batch.lock").is_file()
    temp = out / output.parent / f".{output.name}.0123456789ab.tmp"  # left by a killed run into out
    temp.write_bytes(b"partial\n")
    assert _batch(src, out, tiny_model) == 0
    assert not temp.exists()


def test_a_subfolder_whose_lock_is_held_keeps_its_temporary_files(tmp_path, tiny_model):
    src = _tree(tmp_path / "in", "sub")
    out = tmp_path / "out"
    assert _batch(src, out, tiny_model) == 0
    output = Path(read_rows(out / "manifest.jsonl")[0]["outputs"][0])
    temp = out / output.parent / f".{output.name}.0123456789ab.tmp"
    with open(out / "sub" / ".medgan-batch.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run into out/sub is writing it now
        temp.write_bytes(b"being written by the run into out/sub\n")
        assert _batch(src, out, tiny_model) == 0
    assert temp.read_bytes() == b"being written by the run into out/sub\n"


# ------------------------------------------------------------------ 4, 5: a full disk is one line, nothing left behind


def test_a_full_disk_while_saving_a_training_state_is_one_line(tmp_path):
    proc = _file_size_limited(
        """
        from medgan.train.state import save_state
        try:
            save_state("run", {"step": 1, "w": torch.zeros(100_000)})
        except MedganError as exc:
            print("ERROR " + json.dumps(str(exc)))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    message = json.loads(proc.stdout.split("ERROR ", 1)[1])
    path = Path("run") / "checkpoints" / "state_00000001.pt"
    assert message.startswith(f"{path}: cannot write the training state (File too large); "), message
    assert "rerun" in message and "\n" not in message
    assert os.listdir(tmp_path / "run" / "checkpoints") == []  # neither the state nor its temporary file


def test_a_full_disk_while_writing_dicom_pixel_data_is_one_plain_line(tmp_path):
    proc = _file_size_limited(
        f"""
        import nibabel as nib
        from medgan.io.save import save_scan
        from medgan.io.scan import make_scan
        img = nib.load({str(MNI_T1)!r})
        data = np.zeros((256, 256, 3), np.float32)  # 128 KiB of pixel data per slice: past the limit
        data[: img.shape[0], : img.shape[1]] = np.asarray(img.dataobj, dtype=np.float32)[:256, :256, 80:83]
        try:
            save_scan(make_scan(data[None], img.affine), "series", format="dicom")
        except MedganError as exc:
            print("ERROR " + json.dumps(str(exc)))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    message = json.loads(proc.stdout.split("ERROR ", 1)[1])
    assert message == "series: cannot write DICOM series (File too large)", message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ 6: one log line per record


def test_a_newline_in_a_folder_name_does_not_split_the_batch_log_line(tmp_path, tiny_model):
    forged = "INFO medgan.batch: scan 9/9 forged: done in 0.1 s -> x"
    src = _tree(tmp_path / "in", f"a\n{forged}")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "batch", "upscale", str(src), str(out), "--model", str(tiny_model)]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (out / "medgan.log").read_text(encoding="utf-8")
    for text in (proc.stderr, log):
        assert not [line for line in text.splitlines() if line.startswith(forged.split(":")[0] + ": scan 9/9")]
        done = [line for line in text.splitlines() if ": done in " in line]
        assert len(done) == 1 and f"a\\x0a{forged}" in done[0], text
    row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert row["status"] == "done" and "\n" in row["input"]  # the data keep the name as it is

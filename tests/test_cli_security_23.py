"""The command line against untrusted files (security review 23).

1. Escape sequences in a checkpoint's metadata (the model card of ``medgan info MODEL``), a DICOM header's Modality
   (``medgan info``'s table) and file names found in a tree (the batch summary line) reached the terminal raw: they
   are printed as visible escapes (``\\x1b``) now.
2. An unrelated existing ``out.json`` beside a NIfTI output was silently replaced by the output's sidecar without
   ``--overwrite`` (convert, degrade, upscale).
3. A huge worker count (``medgan run`` spec, ``--workers``) ended in a raw ``OverflowError`` traceback from the
   process pool: bounded now, with one line (exit 2 for an option, 1 for a spec key).

Real data only (``sample_data/``); the model is an untrained tiny one saved with the real checkpoint API.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DATA, save_tiny_sr, write_yaml

from pipelines.cli import EXIT_FAILED, EXIT_USAGE, main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
MR_SMALL = SAMPLE_DATA / "dicom" / "pydicom_mr_small" / "MR_small.dcm"
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series
#: what a terminal acts on: C0 controls but newline and tab, DEL, C1 controls (U+009B is a one-character CSI)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ESCAPES = "MR\x1b[2J\x1b]0;pwn\x07\x9b31m"


def _run(argv: list) -> int:
    """``medgan ARGV``'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    """An untrained tiny 3-D SRResNet, x2 along scan axis 2, as a real checkpoint."""
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_tp2.safetensors", factor=(1, 1, 2), roi_size=16)


def _crop(dst: Path) -> Path:
    """A 16 x 16 x 4 crop of the real ``anatomical.nii``."""
    img = nib.load(ANAT).slicer[0:16, 0:16, 8:12]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), dst)
    return dst


# ------------------------------------------------------------------ 1: escape sequences never reach the terminal


def test_model_card_shows_escape_sequences_of_the_metadata_escaped(tmp_path, capsys):
    model = save_tiny_sr(tmp_path / "model.safetensors")
    from medgan.infer.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(model)  # the same weights, re-saved with a modality that carries escape sequences
    fake = save_checkpoint(
        tmp_path / "fake.safetensors", ckpt.state_dict, config=ckpt.metadata["model"], modality=ESCAPES
    )
    assert _run(["info", fake]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out), repr(out)
    assert "MR\\x1b[2J\\x1b]0;pwn\\x07\\x9b31m" in out  # shown, visibly
    assert out.startswith("# fake\n") and "\n| task | super-resolution |\n" in out  # the card's lines are kept


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # pydicom, on writing the hostile Modality
def test_info_table_shows_a_header_modality_escaped_and_stays_aligned(tmp_path, capsys):
    folder = tmp_path / "esc"
    folder.mkdir()
    shutil.copy(MR_SMALL, folder / "a.dcm")
    ds = pydicom.dcmread(MR_SMALL)
    ds.Modality = "MR\x1b[2J\x9b1m"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()  # its own series: a row of its own
    ds.save_as(folder / "b.dcm")
    assert _run(["info", folder]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out), repr(out)
    lines = out.splitlines()
    assert any("MR\\x1b[2J\\x9b1m" in line for line in lines[1:3])
    # the escaped cell counts as wide as it is shown: every row's STATUS starts under the header's
    status_at = lines[0].index("STATUS")
    assert all(line[status_at:].startswith("ok") for line in lines[1:3]), out


@pytest.mark.parametrize("command", ["upscale", "batch"])
def test_tree_summary_line_shows_file_names_escaped(tmp_path, tiny_sr, capsys, command):
    tree, out = tmp_path / "tree", tmp_path / "out"
    _crop(tree / "one.nii")
    broken = tree / "x\x1b[2J\x9b1my.nii"  # an unusable file: the summary names it with its path
    broken.write_bytes(b"not a NIfTI file at all" * 20)
    argv = ["upscale", tree, out, "--model", tiny_sr]
    assert _run(["batch", *argv] if command == "batch" else argv) == 3
    line = capsys.readouterr().out.strip()
    assert "1 unusable" in line and "x\\x1b[2J\\x9b1my.nii" in line, line
    assert not CONTROL.search(line), repr(line)


# ------------------------------------------------------------------ 2: an existing sidecar path needs --overwrite


@pytest.mark.parametrize("command", ["convert", "degrade", "upscale"])
def test_an_existing_json_beside_the_output_is_not_replaced_without_overwrite(tmp_path, tiny_sr, capsys, command):
    scan = _crop(tmp_path / "in" / "scan.nii.gz")
    source = HITACHI if command == "convert" else scan  # a DICOM input: the output gets a provenance sidecar
    extra = {"convert": [], "degrade": ["--factor", "2"], "upscale": ["--model", tiny_sr]}[command]
    (tmp_path / "s2").mkdir()
    mine, out = tmp_path / "s2" / "c.json", tmp_path / "s2" / "c.nii.gz"
    mine.write_text("MINE\n")
    assert _run([command, source, out, *extra]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"its sidecar {mine} exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert mine.read_text() == "MINE\n" and not out.exists()
    assert _run([command, source, out, *extra, "--overwrite"]) == 0  # as the help says: output and sidecar replaced
    assert out.is_file() and mine.read_text() != "MINE\n"


# ------------------------------------------------------------------ 3: a worker count with an upper bound


def test_a_huge_worker_count_in_a_spec_is_one_line_exit_1(tmp_path, capsys):
    _crop(tmp_path / "in" / "one.nii")
    spec = write_yaml(
        tmp_path, {"job": "upscale", "input": "in", "output": "out", "workers": 99999999999999999999999999}
    )
    assert _run(["run", spec]) == EXIT_FAILED
    err = capsys.readouterr().err
    from pipelines.batch.spec import max_workers

    assert "'workers'" in err and f"more than {max_workers()}" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    # --set is validated the same way
    assert _run(["run", spec, "--set", f"workers={max_workers() + 1}"]) == EXIT_FAILED
    assert f"{max_workers() + 1} is more than {max_workers()}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["batch", "upscale"])
def test_a_huge_workers_option_is_a_usage_error(tmp_path, tiny_sr, capsys, command):
    tree = tmp_path / "tree"
    _crop(tree / "a" / "one.nii")
    _crop(tree / "b" / "two.nii")
    argv = ["upscale", tree, tmp_path / "out", "--model", tiny_sr, "--workers", "99999999999999999999999999"]
    assert _run(["batch", *argv] if command == "batch" else argv) == EXIT_USAGE
    err = capsys.readouterr().err
    from pipelines.batch.spec import MAX_WORKERS_PER_CORE, max_workers

    assert "--workers" in err and f"more than {max_workers()}" in err and "Traceback" not in err, err
    assert f"{MAX_WORKERS_PER_CORE} per usable CPU core" in err
    assert not (tmp_path / "out").exists()


def test_the_worker_bound_itself_is_accepted():
    from pipelines.batch.spec import MAX_WORKERS_PER_CORE, max_workers
    from pipelines.commands._args import worker_count

    assert worker_count(str(max_workers())) == max_workers() >= MAX_WORKERS_PER_CORE


def test_errors_and_log_lines_show_a_file_names_escape_sequence_escaped(tmp_path, capsys):
    """A file name holding an escape sequence reached the terminal raw through an error line (report_error) and
    the log lines (docs review 23): both now show it escaped, as ``medgan info`` does."""
    import subprocess
    import sys

    from conftest import SAMPLE_DATA

    from pipelines.cli import main

    missing = tmp_path / "x\x1b[2Jy.nii"
    assert main(["convert", str(missing), str(tmp_path / "o.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "x\\x1b[2Jy.nii: no such file or folder" in err
    named = tmp_path / "a\x1b[2Jb.nii.gz"  # the log line "wrote OUT" names it
    source = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-v", "convert", str(source), str(named)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stderr and "a\\x1b[2Jb.nii.gz" in run.stderr
    assert named.is_file()


def test_batch_run_log_escapes_control_characters_in_file_names(tmp_path):
    """``medgan.log`` got file names raw while the terminal got them escaped: ``cat medgan.log`` replayed a
    folder name's escape sequence on the reader's terminal (here the output root, named in the first line)."""
    in_root = tmp_path / "in"
    in_root.mkdir()
    shutil.copy(ANAT, in_root / "anat.nii")
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    out_root = tmp_path / "o\x1b[2Jb"
    assert _run(["batch", "upscale", in_root, out_root, "--model", model, "--workers", "1", "--quiet"]) == 0
    log = (out_root / "medgan.log").read_text(encoding="utf-8")
    assert "o\\x1b[2Jb" in log, log  # the output root is named in the log, escaped
    assert not CONTROL.search(log.replace("\n", "")), log

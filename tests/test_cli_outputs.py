"""The command line: the one-scan commands' outputs.

1. NIfTI outputs of ``upscale``, ``degrade``, ``convert`` and ``synthesize`` silently replaced existing files, the
   input scan itself included: an existing output now needs ``--overwrite``, and the input is never replaced.
2. ``medgan upscale TREE OUT --overwrite`` was silently ignored and a tree run printed nothing: ``--overwrite`` redoes
   the scans, and a one-line summary names the failed and unusable ones.
5. The output's folder was found unwritable only after the whole computation: checked first now.
7. ``--axes 0,1,2`` (a 3-D model: the scan's axes as they stand) was refused by the command line.
8. ``synthesize`` had no progress bar.
11. "the parent folder ... does not exist" for a parent that is a file.

Real data only (``sample_data/``); the models are untrained tiny ones saved with the real API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA, mni_label_map, save_tiny_sr, save_tiny_synthesizer

from pipelines.cli import EXIT_FAILED, EXIT_USAGE, main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # a 4-slice MR series
BOX = (slice(60, 76), slice(70, 86), slice(76, 80))  # 16 x 16 x 4 voxels of the MNI grid


def _run(argv: list[str]) -> int:
    """``medgan ARGV``'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    """An untrained tiny 3-D SRResNet, x2 along scan axis 2 (a through-plane model), as a real checkpoint."""
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_tp2.safetensors", factor=(1, 1, 2), roi_size=16)


@pytest.fixture(scope="module")
def tiny_syn(tmp_path_factory) -> Path:
    return save_tiny_synthesizer(tmp_path_factory.mktemp("syn") / "tiny.safetensors")


def _crop(dst: Path, box: tuple[slice, ...] = (slice(0, 16), slice(0, 16), slice(8, 12)), zooms=None) -> Path:
    """A crop of the real ``anatomical.nii`` (voxel sizes ``zooms`` when given, else its own)."""
    img = nib.load(ANAT).slicer[box]
    affine = img.affine if zooms is None else np.diag([*zooms, 1.0])
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), affine), dst)
    return dst


# ------------------------------------------------------------------ 1: existing outputs and the input itself


def test_upscale_never_replaces_its_input(tmp_path, tiny_sr, capsys):
    scan = _crop(tmp_path / "scan.nii.gz")
    before = scan.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert _run(["upscale", scan, scan, "--model", tiny_sr, *extra]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert "is the input" in err and str(scan) in err and len(err.strip().splitlines()) == 1
    assert scan.read_bytes() == before


def test_degrade_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
    scan = _crop(tmp_path / "scan.nii.gz")
    out = _crop(tmp_path / "earlier.nii.gz", (slice(0, 8), slice(0, 8), slice(0, 4)))
    before = out.read_bytes()
    assert _run(["degrade", scan, out, "--factor", "2"]) == EXIT_FAILED
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert _run(["degrade", scan, out, "--factor", "2", "--overwrite"]) == 0
    assert nib.load(out).shape == (8, 8, 2)


def test_degrade_and_convert_never_replace_the_input_or_its_sidecar(tmp_path, capsys):
    scan = _crop(tmp_path / "scan.nii.gz")
    assert _run(["degrade", scan, tmp_path / "lr.nii.gz", "--factor", "2"]) == 0  # lr.json: its provenance
    lr, sidecar = tmp_path / "lr.nii.gz", tmp_path / "lr.json"
    images = lr.read_bytes(), sidecar.read_bytes()
    for argv in (
        ["degrade", lr, lr, "--factor", "2", "--overwrite"],
        ["convert", lr, lr, "--overwrite"],
        ["convert", lr, tmp_path / "lr.nii", "--overwrite"],  # lr.nii's sidecar is lr.json, the input's
    ):
        assert _run(argv) == EXIT_FAILED, argv
        assert "the input" in capsys.readouterr().err
    assert (lr.read_bytes(), sidecar.read_bytes()) == images


def test_convert_refuses_an_existing_nifti_and_a_dicom_output_holding_the_input(tmp_path, capsys):
    series = shutil.copytree(HITACHI, tmp_path / "series")
    out = tmp_path / "out.nii.gz"
    assert _run(["convert", series, out]) == 0
    stamp = out.stat().st_mtime_ns
    assert _run(["convert", series, out]) == EXIT_FAILED and "exists" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp
    files = sorted(p.name for p in series.iterdir())
    for target in (series, tmp_path):  # --overwrite would replace the folder, and the series with it
        assert _run(["convert", series, target, "--format", "dicom", "--overwrite"]) == EXIT_FAILED
        assert "input" in capsys.readouterr().err
    assert sorted(p.name for p in series.iterdir()) == files


def test_synthesize_refuses_an_existing_out_and_never_replaces_the_labels(tmp_path, tiny_syn, capsys):
    labels = mni_label_map(tmp_path / "labels.nii.gz", BOX)
    real = _crop(tmp_path / "real.nii.gz")
    before = real.read_bytes(), labels.read_bytes()
    base = ["synthesize", "--model", tiny_syn, "--labels", labels, "--seed", "0"]
    assert _run([*base, "--out", real]) == EXIT_FAILED and "--overwrite" in capsys.readouterr().err
    assert _run([*base, "--out", labels, "--overwrite"]) == EXIT_FAILED and "input" in capsys.readouterr().err
    assert _run([*base, "--out", tmp_path / "s.nii.gz", "--labels-out", labels, "--overwrite"]) == EXIT_FAILED
    assert (real.read_bytes(), labels.read_bytes()) == before and not (tmp_path / "s.nii.gz").exists()
    # -n 2 writes s_000 / s_001: an existing s_001 is refused before anything is written
    _crop(tmp_path / "s_001.nii.gz")
    assert _run([*base, "-n", "2", "--out", tmp_path / "s.nii.gz"]) == EXIT_FAILED
    assert "s_001.nii.gz" in capsys.readouterr().err and not (tmp_path / "s_000.nii.gz").exists()
    assert _run([*base, "-n", "2", "--out", tmp_path / "s.nii.gz", "--overwrite"]) == 0
    assert json.loads((tmp_path / "s_001.json").read_text())["synthetic"] is True


def test_synthesize_overwrite_replaces_a_dicom_labels_out_folder(tmp_path, tiny_syn):
    """--overwrite passed the checks for an existing DICOM --labels-out folder, but the label map was saved without
    it: the run generated everything and then failed (exit 1, the image not written either)."""
    labels = mni_label_map(tmp_path / "labels.nii.gz", BOX)
    base = ["synthesize", "--model", tiny_syn, "--labels", labels, "--out", tmp_path / "img.nii.gz"]
    assert _run([*base, "--labels-out", tmp_path / "lab_dcm", "--seed", "1"]) == 0
    assert _run([*base, "--labels-out", tmp_path / "lab_dcm", "--seed", "2", "--overwrite"]) == 0
    assert json.loads((tmp_path / "img.json").read_text())["seed"] == 2


def test_an_upper_case_twin_keeps_its_sidecar(tmp_path, capsys):
    """C.NII beside C.NII.GZ shares C.json: refused without --overwrite, as c.nii beside c.nii.gz is (the twin was
    looked up in lower case only, and C.json was replaced: C.NII.GZ lost its provenance)."""
    scan = _crop(tmp_path / "scan.nii.gz")
    assert _run(["degrade", scan, tmp_path / "C.NII.GZ", "--factor", "2"]) == 0
    sidecar = (tmp_path / "C.json").read_bytes()
    assert _run(["degrade", scan, tmp_path / "C.NII", "--factor", "4"]) == EXIT_FAILED
    assert "provenance" in capsys.readouterr().err and (tmp_path / "C.json").read_bytes() == sidecar


# ------------------------------------------------------------------ 2: folder trees


def test_upscale_tree_overwrite_redoes_the_scans_and_a_summary_is_printed(tmp_path, tiny_sr, capsys):
    tree, out = tmp_path / "tree", tmp_path / "tree_sr"
    _crop(tree / "a" / "one.nii")
    _crop(tree / "b" / "two.nii", (slice(8, 24), slice(8, 24), slice(8, 12)))
    (tree / "c").mkdir()
    (tree / "c" / "broken.nii").write_bytes(b"not a NIfTI file at all" * 20)

    def done_rows() -> list[str]:  # one manifest row per scan and run: "done" when the run upscaled the scan
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
        return sorted(r["scan_id"] for r in rows if r["status"] == "done")

    assert _run(["upscale", tree, out, "--model", tiny_sr]) == 3  # the broken file is unusable
    line = capsys.readouterr().out.strip()
    # "done", as manifest.csv and medgan batch say (the summary is built in one place; it read "upscaled" here)
    assert line.startswith("3 scan(s): 2 done") and "1 unusable: " in line and "broken" in line, line
    first = done_rows()
    assert _run(["upscale", tree, out, "--model", tiny_sr]) == 3
    assert "2 skipped as already done" in capsys.readouterr().out
    assert _run(["upscale", tree, out, "--model", tiny_sr, "--overwrite"]) == 3
    assert "2 done" in capsys.readouterr().out
    assert len(first) == 2 and done_rows() == sorted(first * 2)  # each scan upscaled again, not skipped


# ------------------------------------------------------------------ 5 and 11: the output folder, checked first


@pytest.mark.parametrize("command", ["upscale", "degrade", "convert"])
def test_a_parent_that_is_a_file_is_refused_before_loading(tmp_path, tiny_sr, monkeypatch, capsys, command):
    import medgan

    def boom(*args, **kwargs):
        raise AssertionError("loaded or computed before checking the output")

    monkeypatch.setattr(medgan, "load_scan", boom)
    monkeypatch.setattr(medgan.SuperResolver, "from_pretrained", boom)
    scan = _crop(tmp_path / "scan.nii.gz")
    (tmp_path / "notes.txt").write_text("a file")
    extra = {"upscale": ["--model", tiny_sr], "degrade": ["--factor", "2"], "convert": []}[command]
    assert _run([command, scan, tmp_path / "notes.txt" / "x.nii.gz", *extra]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "does not exist" not in err, err


def test_an_unwritable_output_folder_fails_before_upscaling(tmp_path, tiny_sr, monkeypatch, capsys):
    import medgan

    def boom(*args, **kwargs):
        raise AssertionError("upscaled before checking the output")

    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (no immutable folders to test with)")
    try:
        monkeypatch.setattr(medgan.SuperResolver, "upscale", boom)
        scan = _crop(tmp_path / "scan.nii.gz")
        assert _run(["upscale", scan, folder / "sr.nii.gz", "--model", tiny_sr]) == EXIT_FAILED
        assert "cannot write" in capsys.readouterr().err
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


# ------------------------------------------------------------------ 7: --axes 0,1,2 for a 3-D model


def test_upscale_axes_0_1_2_upscales_a_scan_whose_slices_are_not_last(tmp_path, tiny_sr, capsys):
    scan = _crop(tmp_path / "tp.nii.gz", (slice(0, 8), slice(0, 16), slice(0, 16)), zooms=(6.0, 2.0, 2.0))
    assert _run(["upscale", scan, tmp_path / "refused.nii.gz", "--model", tiny_sr]) == EXIT_FAILED
    assert "axes=(0, 1, 2)" in capsys.readouterr().err
    assert _run(["upscale", scan, tmp_path / "sr.nii.gz", "--model", tiny_sr, "--axes", "0,1,2"]) == 0
    out = nib.load(tmp_path / "sr.nii.gz")
    assert out.shape == (8, 16, 32) and np.allclose(out.header.get_zooms(), (6.0, 2.0, 1.0))
    assert _run(["upscale", scan, tmp_path / "x.nii.gz", "--model", tiny_sr, "--axes", "2,1,0"]) == EXIT_USAGE


# ------------------------------------------------------------------ 8: synthesize --progress


def test_synthesize_progress_shows_a_bar_over_the_slices_of_a_3d_map(tmp_path, tiny_syn, capsys):
    labels = mni_label_map(tmp_path / "labels.nii.gz", BOX)  # 16 x 16 x 4: four slices for the 2-D model
    argv = ["synthesize", "--model", tiny_syn, "--labels", labels, "--seed", "0", "-n", "2", "--stack"]
    assert _run([*argv, "--out", tmp_path / "s.nii.gz", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "synthesize" in err and "8/8" in err and "slice" in err, err
    assert _run([*argv, "--out", tmp_path / "quiet.nii.gz"]) == 0
    assert "8/8" not in capsys.readouterr().err
    # the bar only watches: the same seed gives the same images with and without it
    assert np.array_equal(nib.load(tmp_path / "s.nii.gz").get_fdata(), nib.load(tmp_path / "quiet.nii.gz").get_fdata())


def test_the_library_says_a_parent_that_is_a_file_is_a_file(tmp_path):
    """save_scan (NIfTI and DICOM) said "does not exist" for a parent folder that is a file."""
    import medgan
    from medgan.errors import MedganError

    scan = medgan.load_scan(str(Path(__file__).resolve().parents[1] / "sample_data/nifti/nibabel/anatomical.nii"))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for target in (blocker / "out.nii.gz", blocker / "dicom_out"):
        with pytest.raises(MedganError, match="is a file, not a folder"):
            medgan.save_scan(scan, target, **({"format": "dicom"} if target.suffix == "" else {}))
    with pytest.raises(MedganError, match="does not exist"):
        medgan.save_scan(scan, tmp_path / "missing" / "out.nii.gz")


def test_an_output_name_of_another_format_is_refused_before_any_work(tmp_path, tiny_sr, monkeypatch, capsys):
    """out.mha passed the early output checks (they copied save_scan's name rules but not this one) and failed
    only after the whole upscale; both now use medgan.io.save.output_kind."""
    import medgan

    def boom(*args, **kwargs):
        raise AssertionError("loaded or computed before checking the output")

    scan = _crop(tmp_path / "scan.nii.gz")
    monkeypatch.setattr(medgan, "load_scan", boom)
    assert _run(["upscale", scan, tmp_path / "out.mha", "--model", tiny_sr]) == EXIT_FAILED
    assert "another format" in capsys.readouterr().err and not (tmp_path / "out.mha").exists()

"""A new user's common mistakes with the ``medgan`` CLI (UX review, round 30), each answered with what went wrong.

1. ``evaluate`` with ``--pred`` and ``--ref`` swapped (a finer-voxel "prediction" of a coarser "reference" over the
   same field of view) advised ``--resample``, which then scored a meaningless PSNR with exit 0; an unrelated
   reference (little overlap) was advised ``--resample`` first too.
2. ``upscale`` of one flat folder holding two DICOM series into a file called it "a folder tree"; a missing IN was
   reported as "OUT exists" when OUT existed.
3. A misspelt or differently-cased shipped model name: no "did you mean", no case folding.
4. ``medgan run``: tab indentation, a misspelt key, and ``--set`` errors blamed on the file.
5. ``medgan info`` on a text file, an archive, a YAML file or a sidecar listed a "dicom-file" scan.
6. ``--help`` of upscale, evaluate, info, batch jobs and run ends with examples.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from contextlib import redirect_stdout
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA

import medgan
from pipelines.cli import main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"
GE_EPI = SAMPLE_DATA / "dicom" / "dcm_qa_nih_ge_epi_volume1"


def _err_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- 1. evaluate: swapped / unrelated


@pytest.fixture
def lr_of_anat(tmp_path) -> Path:
    """The anatomical example (33 x 41 x 25, 2 mm) degraded x2 (16 x 20 x 12, 4 mm: one voxel cropped per axis)."""
    return medgan.save_scan(medgan.degrade(medgan.load_scan(ANAT), 2), tmp_path / "lr.nii.gz")


def test_evaluate_names_swapped_pred_and_ref(tmp_path, capsys, lr_of_anat):
    argv = ["evaluate", "--pred", str(ANAT), "--ref", str(lr_of_anat), "--out", str(tmp_path / "ev")]
    assert main(argv) == 1
    line = _err_line(capsys)
    assert "the prediction has 2x finer voxels than the reference over the same field of view" in line, line
    assert "are --pred and --ref swapped?" in line, line
    assert not (tmp_path / "ev" / "metrics.csv").exists()


def test_evaluate_resample_of_a_finer_prediction_is_scored_with_a_warning(tmp_path, capsys, caplog, lr_of_anat):
    """--resample asks to score a prediction finer than its reference on the reference's grid (an x4 output against
    an x2 reference): scored, and the warning names the swap, which looks the same (exit 0 with a meaningless
    PSNR before, without a word)."""
    argv = ["evaluate", "--pred", str(ANAT), "--ref", str(lr_of_anat), "--out", str(tmp_path / "ev"), "--resample"]
    assert main(argv) == 0
    assert (tmp_path / "ev" / "metrics.csv").exists()
    said = capsys.readouterr().err + caplog.text
    assert "finer voxels than the reference" in said and "swapped" in said


def _shifted(tmp_path: Path, mm: float) -> Path:
    img = nib.load(ANAT)
    affine = img.affine.copy()
    affine[0, 3] += mm
    out = tmp_path / f"shifted_{int(mm)}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), affine), out)
    return out


def test_evaluate_says_unrelated_scans_do_not_overlap_before_any_resample_advice(tmp_path, capsys):
    far = _shifted(tmp_path, 500.0)  # nothing in common with the reference
    assert main(["evaluate", "--pred", str(far), "--ref", str(ANAT), "--out", str(tmp_path / "a")]) == 1
    line = _err_line(capsys)
    assert "the scans do not overlap" in line and "they may not be the same scan" in line, line
    assert "--resample" not in line, line
    near = _shifted(tmp_path, 50.0)  # 66 mm wide, moved 50 mm: a quarter overlaps
    assert main(["evaluate", "--pred", str(near), "--ref", str(ANAT), "--out", str(tmp_path / "b")]) == 1
    line = _err_line(capsys)
    assert "the scans barely overlap" in line and "they may not be the same scan" in line, line
    # resampling is the last resort named, not the first advice
    assert line.index("may not be the same scan") < line.index("--resample"), line


# --------------------------------------------------------------------------- 2. upscale: flat folder of 2 series


def test_upscale_of_a_folder_of_two_series_into_a_file_lists_them(tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for src in (HITACHI, GE_EPI):
        for f in sorted(src.iterdir())[:5]:
            shutil.copy(f, mixed / f.name)
    assert main(["upscale", str(mixed), str(tmp_path / "up.nii.gz")]) == 2
    line = _err_line(capsys)
    assert "folder tree" not in line, line
    assert "holds 2 usable series" in line and "--series ID" in line, line
    ids = [r.id for r in medgan.discover_scans(mixed) if r.usable]
    assert len(ids) == 2 and all(i in line for i in ids), line
    assert "give a folder as OUT to upscale all 2" in line, line


def test_upscale_reports_a_missing_input_before_an_existing_output(tmp_path, capsys):
    existing = tmp_path / "existing.nii"
    shutil.copy(ANAT, existing)
    assert main(["upscale", str(tmp_path / "missing.nii.gz"), str(existing)]) == 1
    line = _err_line(capsys)
    assert "missing.nii.gz: no such file or folder" in line and "exists" not in line, line


# --------------------------------------------------------------------------- 3. model names


def test_info_suggests_the_shipped_model_a_misspelt_name_meant(capsys):
    assert main(["info", "brain-mr-x2-3"]) == 1
    line = _err_line(capsys)
    assert "no such file or folder" in line and "did you mean the shipped model 'brain-mr-x2-3d'?" in line, line
    # another case names the same model
    assert main(["info", "BRAIN-MR-X2-3D"]) == 0
    assert "brain-mr-x2-3d" in capsys.readouterr().out


def test_model_option_folds_case_and_suggests_a_close_name(tmp_path, capsys):
    from medgan.errors import CheckpointError
    from medgan.infer.pretrained import available_models, resolve_model_path

    assert resolve_model_path("brain-mr-x2-3D", task="super-resolution") == available_models()["brain-mr-x2-3d"]
    with pytest.raises(CheckpointError, match=r"did you mean 'brain-mr-x2-3d'\?"):
        resolve_model_path("brain-mr-x2-3", task="super-resolution")
    assert main(["upscale", str(ANAT), str(tmp_path / "o.nii.gz"), "--model", "brain-mr-x2-3"]) == 1
    assert "did you mean 'brain-mr-x2-3d'?" in _err_line(capsys)


# --------------------------------------------------------------------------- 4. medgan run specs


def test_run_spec_tabs_typos_and_set_overrides(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("job: upscale\ninput: lrtree\noutput: srtree\n\tmodel: brain-mr-x2-3d\n")
    assert main(["run", str(spec)]) == 1
    line = _err_line(capsys)
    assert "line 4" in line and "YAML indents with spaces, not tabs" in line, line
    spec.write_text("job: upscale\ninput: lrtree\nouput: srtree\n")
    assert main(["run", str(spec)]) == 1
    line = _err_line(capsys)
    assert "unknown key 'ouput' (did you mean 'output'?)" in line and "[" not in line, line
    spec.write_text("job: upscale\ninput: lrtree\noutput: srtree\n")
    assert main(["run", str(spec), "--set", "workers=two"]) == 1
    line = _err_line(capsys)
    assert "--set workers" in line and "'workers' must be a positive integer" in line, line
    assert main(["run", str(spec), "--set", "outptu=x"]) == 1
    line = _err_line(capsys)
    assert "--set outptu" in line and "did you mean 'output'?" in line, line


# --------------------------------------------------------------------------- 5. medgan info on non-scans


def test_info_says_what_a_non_scan_file_is(tmp_path, capsys):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(ANAT, "anat.nii")
    tarball = tmp_path / "scans.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(ANAT, "anat.nii")
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text("job: upscale\ninput: a\noutput: b\n")
    sr = medgan.save_scan(medgan.degrade(medgan.load_scan(ANAT), 2), tmp_path / "sr.nii.gz")
    sidecar = tmp_path / "sr.json"
    assert sidecar.is_file()
    expected = {
        text: "a text file, not a scan",
        archive: "a ZIP archive, not a scan: unpack it first",
        tarball: "a TAR archive, not a scan: unpack it first",
        yaml_file: "a YAML file",
        sidecar: f"a medgan provenance sidecar of {sr.name}",
    }
    for path, what in expected.items():
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["info", str(path)]) == 1
        err = capsys.readouterr().err
        assert what in err, (path, err)
        assert "dicom-file" not in out.getvalue() and "scan(s) found" not in out.getvalue(), out.getvalue()


# --------------------------------------------------------------------------- 6. --help examples


@pytest.mark.parametrize(
    "command",
    [
        ["upscale"],
        ["evaluate"],
        ["info"],
        ["run"],
        ["batch", "upscale"],
        ["batch", "synthesize"],
        ["batch", "evaluate"],
    ],
)
def test_help_ends_with_examples(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    examples = out[out.index("\nexamples:\n") :].splitlines()[1:]
    lines = [ln.strip() for ln in examples if ln.strip().startswith("medgan ")]
    assert 1 <= len(lines) <= 3, out
    assert any(ln.startswith("medgan " + " ".join(command)) for ln in lines), out

"""Command-line usability fixes (round 22), on real data (``sample_data/`` and the shared DICOM corpus).

- ``medgan upscale`` / ``medgan batch upscale --format dicom`` of a multi-volume scan (a 10-volume GE EPI fMRI
  series) is refused before the model runs, with advice a user can follow; it used to upscale the whole scan first
  and then fail in the DICOM writer, advising to "save each channel separately", which no option does;
- ``medgan evaluate --out DIR`` refuses a DIR that already holds a report unless ``--overwrite`` is given;
- ``medgan batch upscale`` defaults ``--model`` as ``medgan upscale`` does, and takes ``--overwrite`` as
  ``--force``;
- the help states the defaults of ``--device``, ``--batch-size`` and ``degrade --method``, and names the shipped
  models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_DATA

from pipelines.cli import build_parser, main

SAMPLE = SAMPLE_DATA
ANAT = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
FMRI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"  # 10 volumes of a real GE EPI run


@pytest.fixture
def fmri_series(corpus_dir: Path) -> Path:
    """The 10-volume GE EPI series folder of the shared corpus (skips where the corpus is absent)."""
    folder = corpus_dir / FMRI / "input"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    return folder


def _error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"medgan {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_upscale_dicom_output_of_a_multivolume_scan_is_refused_before_the_model_runs(tmp_path, capsys, fmri_series):
    out = tmp_path / "sr_dicom"
    # --axes 0,1,2 does not fit a 2-D model, which the upscale itself refuses: the DICOM refusal must come first
    # (the old code ran the model first and met that error, or, without it, upscaled all 10 volumes)
    args = ["upscale", "--model", "brain-mr-x2-2d", str(fmri_series), str(out), "--axes", "0,1,2"]
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err, "upscale")
    assert "DICOM series holds one volume" in line and "would have 10" in line
    assert "--format nifti" in line and "scan[k:k+1]" in line
    assert "save each channel separately" not in line  # no command-line option does that
    assert not out.exists() or not any(out.iterdir())


def test_upscale_nifti_output_of_a_multivolume_scan_is_not_refused_by_the_dicom_check(tmp_path, capsys, fmri_series):
    # the check is for DICOM output only: a NIfTI output goes on to the model (here its own --axes refusal)
    out = tmp_path / "sr.nii.gz"
    args = ["upscale", "--model", "brain-mr-x2-2d", str(fmri_series), str(out), "--axes", "0,1,2"]
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err, "upscale")
    assert "DICOM series holds one volume" not in line
    assert not out.exists()


def test_batch_upscale_defaults_the_model_and_fails_a_multivolume_dicom_scan_before_compute(
    tmp_path, capsys, fmri_series
):
    tree = tmp_path / "in"
    shutil.copytree(fmri_series, tree / "fmri")
    out = tmp_path / "out"
    # no --model: the default brain-mr-x2-3d, as `medgan upscale` (the old code: usage error "--model required")
    code = main(["batch", "upscale", str(tree), str(out), "--format", "dicom", "--quiet"])
    assert code == 3
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "DICOM series holds one volume" in rows[0]["error"] and "would have 10" in rows[0]["error"]
    assert "infer" not in (rows[0].get("seconds") or {})  # refused before the model step finished


def test_batch_upscale_refuses_a_multivolume_dicom_scan_before_the_model_step(tmp_path, fmri_series):
    tree = tmp_path / "in"
    shutil.copytree(fmri_series, tree / "fmri")
    out = tmp_path / "out"
    # the old code upscaled all 10 volumes (its "infer" stage timed) before the DICOM writer refused them
    args = ["batch", "upscale", str(tree), str(out), "--model", "brain-mr-x2-2d", "--format", "dicom", "--quiet"]
    assert main(args) == 3
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "DICOM series holds one volume" in rows[0]["error"] and "save each channel" not in rows[0]["error"]
    assert "infer" not in rows[0]["seconds"]


def test_batch_overwrite_is_an_alias_of_force():
    parser = build_parser()
    for job, extra in (("upscale", []), ("synthesize", ["--model", "brain-t1-tissue-2d"]), ("evaluate", ["r"])):
        args = parser.parse_args(["batch", job, "a", "b", *extra, "--overwrite"])
        assert args.force is True
        assert parser.parse_args(["batch", job, "a", "b", *extra]).force is False
    assert parser.parse_args(["batch", "upscale", "a", "b"]).model == "brain-mr-x2-3d"


def test_evaluate_refuses_an_out_folder_holding_a_report_without_overwrite(tmp_path, capsys):
    ref = shutil.copy(ANAT, tmp_path / "anatomical.nii")
    out = tmp_path / "report"
    base = ["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out), "--max-montages", "0"]
    assert main(base) == 0
    capsys.readouterr()
    first = {name: (out / name).read_bytes() for name in ("report.md", "metrics.csv", "metrics.json")}
    (out / "metrics.json").write_text('{"earlier": "report"}\n')  # stands for an earlier run's report
    assert main([*base, "--method", "other"]) == 1
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert str(out) in line and "already holds a report" in line and "--overwrite" in line
    assert (out / "metrics.json").read_text() == '{"earlier": "report"}\n'  # left alone
    assert (out / "report.md").read_bytes() == first["report.md"]
    assert main([*base, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text()).get("earlier") is None


def test_evaluate_into_a_folder_without_a_report_needs_no_overwrite(tmp_path):
    ref = shutil.copy(ANAT, tmp_path / "anatomical.nii")
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")  # a user's file is not a report
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(out), "--max-montages", "0"]) == 0
    assert (out / "notes.txt").read_text() == "mine\n"


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_help_states_defaults_and_names_the_shipped_models(capsys):
    import medgan

    shipped = {m["task"]: [] for m in medgan.list_pretrained()}
    for m in medgan.list_pretrained():
        shipped[m["task"]].append(m["name"])
    up = _help(capsys, "upscale")
    assert "--device DEVICE auto (the default" in up
    assert "--batch-size N windows per forward pass (default:" in up
    # argparse may break a hyphenated name at its hyphen: compare without the line breaks' spaces
    assert all(name in up.replace("- ", "-") for name in shipped["super-resolution"])
    sy = _help(capsys, "synthesize")
    assert all(name in sy.replace("- ", "-") for name in shipped["synthesis"])
    assert "auto (the default" in sy
    assert "degradation model (default: interpolate)" in _help(capsys, "degrade")
    ev = _help(capsys, "evaluate")
    assert "--overwrite" in ev
    bu = _help(capsys, "batch", "upscale").replace("- ", "-")
    assert "--force, --overwrite" in bu and "default: brain-mr-x2-3d" in bu


def test_top_level_help_does_not_import_torch():
    # the model names are listed only when a sub-command's help is printed: `medgan --help` stays fast
    code = (
        "import sys\nfrom pipelines.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "TORCH False" in done.stdout

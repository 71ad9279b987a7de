"""The command line: batch runs, evaluation and error messages.

3. ``batch synthesize`` with a ``--scalar`` / ``--class`` the model refuses failed every map, and each failed redo
   removed that map's earlier outputs: the condition is checked once, before anything is planned or removed.
4. ``evaluate --resample`` with a 2-D prediction of a 3-D reference advised to "pass --resample"; a prediction
   with a multiple of the reference's shape (the low-resolution input given as the reference) was advised so too.
9. A NIfTI id listed from a parent folder was "no series here" without saying why.
10. A folder, or a training state, given as the model: messages that did not say what to give instead.
12. Batch logs named only a task's first output, the summary and the log named different manifests, and a Ctrl-C
    left no line in ``medgan.log``.

Real data only (``sample_data/``); the models are untrained tiny ones saved with the real API, or shipped ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA, mni_label_map, mni_tissue_slice, save_tiny_sr, save_tiny_synthesizer

from pipelines.batch.manifest import read_rows
from pipelines.cli import EXIT_FAILED, main

ANAT = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(60, 76), slice(70, 86), slice(76, 80))  # 16 x 16 x 4 voxels of the MNI grid


def _run(argv: list) -> int:
    """``medgan ARGV``'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def tiny_syn(tmp_path_factory) -> Path:
    return save_tiny_synthesizer(tmp_path_factory.mktemp("syn") / "tiny.safetensors")


def _files(root: Path) -> dict[str, bytes]:
    """Every output file under ``root`` (not the run's log, manifests or lock) with its bytes."""
    skip = {"medgan.log", "manifest.jsonl", "manifest.csv", ".medgan-batch.lock"}
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name not in skip
    }


# ------------------------------------------------------------------ 3: a bad condition removes nothing


def test_batch_synthesize_refuses_an_out_of_range_scalar_before_removing_anything(tmp_path, capsys):
    src, out = tmp_path / "labtree", tmp_path / "out"
    mni_tissue_slice(src / "x" / "a.nii.gz", 80)
    mni_tissue_slice(src / "y" / "b.nii.gz", 60)
    args = ["batch", "synthesize", src, out, "--model", "brain-t1-tissue-2d", "--device", "cpu", "--quiet"]
    assert _run([*args, "-n", "2", "--scalar", "0.5"]) == 0
    before, rows = _files(out), read_rows(out / "manifest.jsonl")
    assert len(before) == 8  # 2 maps x 2 samples x (image + sidecar)
    capsys.readouterr()

    assert _run([*args, "-n", "2", "--scalar", "9"]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[0, 1]" in err and "9" in err, err
    assert _files(out) == before  # every earlier output still there, unchanged
    assert read_rows(out / "manifest.jsonl") == rows  # and no failed row recorded

    # the single-scan command refuses the same value with the same check
    single = ["synthesize", "--model", "brain-t1-tissue-2d", "--labels", src / "x" / "a.nii.gz", "--device", "cpu"]
    assert _run([*single, "--out", tmp_path / "one.nii.gz", "--scalar", "9"]) == EXIT_FAILED
    assert err.split("error: ", 1)[1] in capsys.readouterr().err


def test_batch_synthesize_refuses_a_condition_the_model_lacks(tmp_path, tiny_syn, capsys):
    """The tiny model has no class and no scalar condition: either given is refused once, exit 1, nothing removed."""
    src, out = tmp_path / "labtree", tmp_path / "out"
    mni_label_map(src / "a" / "a.nii.gz", BOX)
    args = ["batch", "synthesize", src, out, "--model", tiny_syn, "--quiet"]
    assert _run(args) == 0
    before = _files(out)
    capsys.readouterr()
    for extra, what in ((["--class", "1"], "no class condition"), (["--scalar", "0.5"], "no scalar condition")):
        assert _run([*args, *extra]) == EXIT_FAILED
        assert what in capsys.readouterr().err
        assert _files(out) == before
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")] == ["done"]


def test_check_condition_is_what_generate_checks(tiny_syn):
    """``Synthesizer.check_condition`` raises what ``generate`` raises for a condition bad on any map."""
    import medgan
    from medgan.errors import MedganError

    synth = medgan.Synthesizer.from_pretrained(tiny_syn, device="cpu")
    labels = medgan.load_scan(mni_label_map(Path(tiny_syn).parent / "l.nii.gz", BOX))
    for bad in ({"scalar": 0.5}, {"class": 1}, {"shade": 1}, 0.5):
        with pytest.raises(MedganError) as checked:
            synth.check_condition(bad)
        with pytest.raises(MedganError) as generated:
            synth.generate(labels, condition=bad, seed=0)
        assert str(checked.value).split(": ")[-1] == str(generated.value).split(": ")[-1]
    assert synth.check_condition(None) == {}


# ------------------------------------------------------------------ 4: evaluate's geometry advice


def _slice_2d(dst: Path) -> Path:
    img = nib.load(ANAT)
    data = np.asarray(img.dataobj, dtype=np.float32)[:, :, 12]
    nib.save(nib.Nifti1Image(data, img.affine), dst)
    return dst


@pytest.mark.parametrize("resample", [True, False])
def test_evaluate_refuses_a_2d_prediction_of_a_3d_reference_without_resample_advice(tmp_path, capsys, resample):
    pred = _slice_2d(tmp_path / "pred2d.nii.gz")
    argv = ["evaluate", "--pred", pred, "--ref", ANAT, "--out", tmp_path / "ev"] + (["--resample"] if resample else [])
    assert _run(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "2-D" in line and "3-D" in line and "cannot add or remove an axis" in line, line
    assert "--resample" not in line and "resample=True" not in line, line


def test_evaluate_asks_whether_the_reference_is_the_low_resolution_input(tmp_path, capsys):
    import medgan

    lr = medgan.save_scan(medgan.degrade(medgan.load_scan(ANAT), 2, noise_std=0.0), tmp_path / "lr.nii.gz")
    sr = medgan.save_scan(medgan.interpolate(medgan.load_scan(lr), 2, order=3), tmp_path / "sr.nii.gz")
    assert _run(["evaluate", "--pred", sr, "--ref", lr, "--out", tmp_path / "ev"]) == EXIT_FAILED
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "low-resolution input" in line and "(2, 2, 2) times" in line and "lr.nii.gz" in line, line
    assert "--resample" not in line, line


def test_evaluate_resample_against_the_low_resolution_input_is_flagged(tmp_path, caplog):
    """With --resample, an upscaled scan scored against its own LR input (given as the reference) was resampled
    down and scored without a word; now a warning and the report's geometry note ask about it."""
    import json

    import medgan

    lr = medgan.save_scan(medgan.degrade(medgan.load_scan(ANAT), 2, noise_std=0.0), tmp_path / "lr.nii.gz")
    sr = medgan.save_scan(medgan.interpolate(medgan.load_scan(lr), 2, order=3), tmp_path / "sr.nii.gz")
    with caplog.at_level("WARNING", logger="medgan.eval.compare"):
        assert _run(["evaluate", "--pred", sr, "--ref", lr, "--out", tmp_path / "ev", "--resample"]) == 0
    assert "is the reference the low-resolution input" in caplog.text
    rows = json.loads((tmp_path / "ev" / "metrics.json").read_text())["rows"]
    assert any("low-resolution input" in str(r.get("geometry")) for r in rows), rows


def test_check_geometry_advice_from_python():
    """The library's own message: no resample advice for a 2-D vs 3-D pair or an integer multiple."""
    from medgan.errors import GeometryMismatchError
    from medgan.eval.metrics import check_geometry

    with pytest.raises(GeometryMismatchError, match="cannot add or remove an axis") as exc:
        check_geometry(np.zeros((1, 8, 8)), np.zeros((1, 8, 8, 4)))
    assert "resample" not in str(exc.value).replace("resampling cannot", "")
    with pytest.raises(GeometryMismatchError, match=r"\(2, 2, 1\) times the voxels") as exc:
        check_geometry(np.zeros((1, 16, 16, 4)), np.zeros((1, 8, 8, 4)))
    assert "resample" not in str(exc.value)
    with pytest.raises(GeometryMismatchError, match="resample"):  # any other shape: the usual advice
        check_geometry(np.zeros((1, 15, 16, 4)), np.zeros((1, 8, 8, 4)))


# ------------------------------------------------------------------ 9: NIfTI ids depend on the folder listed


def test_series_id_from_a_parent_folder_says_why_it_differs(tmp_path, capsys):
    import medgan

    sub = tmp_path / "parent" / "sub"
    sub.mkdir(parents=True)
    shutil.copy(ANAT, sub / "anatomical.nii")
    parent_id = medgan.discover_scans(tmp_path / "parent")[0].id
    here_id = medgan.discover_scans(sub)[0].id
    assert parent_id != here_id
    assert _run(["convert", sub, tmp_path / "x.nii.gz", "--series", parent_id]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "depends on the folder it was listed from" in err and here_id in err, err
    assert not (tmp_path / "x.nii.gz").exists()
    assert _run(["convert", sub, tmp_path / "x.nii.gz", "--series", here_id]) == 0


# ------------------------------------------------------------------ 10: checkpoint errors


def test_a_folder_given_as_the_model_says_it_is_a_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    save_tiny_sr(run_dir / "model.safetensors")
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.load(ANAT).slicer[:16, :16, :8], scan)
    assert _run(["upscale", scan, tmp_path / "x.nii.gz", "--model", run_dir]) == EXIT_FAILED
    line = capsys.readouterr().err.strip()
    assert "is a folder" in line and "model.safetensors" in line and "not found" not in line, line
    (tmp_path / "empty").mkdir()
    assert _run(["upscale", scan, tmp_path / "x.nii.gz", "--model", tmp_path / "empty"]) == EXIT_FAILED
    assert "is a folder" in capsys.readouterr().err


def test_a_training_state_given_as_the_model_says_how_to_finish_training(tmp_path, capsys):
    import torch

    from medgan.models.registry import build_generator
    from medgan.train.core import MODEL_FILE
    from medgan.train.state import save_state

    model = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]})
    state = save_state(tmp_path / "run", {"step": 3, "generator": model.state_dict(), "rng": torch.get_rng_state()})
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.load(ANAT).slicer[:16, :16, :8], scan)
    assert _run(["upscale", scan, tmp_path / "x.nii.gz", "--model", state]) == EXIT_FAILED
    line = capsys.readouterr().err.strip()
    assert "training state" in line and "train-sr" in line and "train-cgan" in line, line
    assert str(tmp_path / "run" / MODEL_FILE) in line and "export the weights" not in line, line


# ------------------------------------------------------------------ 12: batch logs


def test_batch_log_names_every_output_and_the_summary_names_manifest_csv(tmp_path, tiny_syn, capsys):
    src, out = tmp_path / "labtree", tmp_path / "out"
    mni_label_map(src / "a" / "a.nii.gz", BOX)
    assert _run(["batch", "synthesize", src, out, "--model", tiny_syn, "-n", "2"]) == 0
    stdout = capsys.readouterr().out
    assert f"manifest {out / 'manifest.csv'}" in stdout, stdout
    log = (out / "medgan.log").read_text()
    done = [line for line in log.splitlines() if ": done in " in line]
    assert len(done) == 1 and "-synth-000.nii.gz" in done[0] and "-synth-001.nii.gz" in done[0], done
    # the log's last line ends with the printed summary (it read "... (manifest: PATH)", another wording)
    assert log.splitlines()[-1].endswith(f"finished: {stdout.strip()}")


def test_an_interrupted_batch_run_says_so_in_its_log(tmp_path, tiny_syn, capsys, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) during the second map: the terminal's one line, and a line in medgan.log."""
    from pipelines.batch import jobs

    src, out = tmp_path / "labtree", tmp_path / "out"
    mni_label_map(src / "a" / "a.nii.gz", BOX)
    mni_label_map(src / "b" / "b.nii.gz", BOX)
    real = jobs.synthesize_job

    def interrupted_on_b(task, options):
        if task.input.startswith("b/"):
            raise KeyboardInterrupt
        return real(task, options)

    monkeypatch.setattr(jobs, "synthesize_job", interrupted_on_b)
    assert _run(["batch", "synthesize", src, out, "--model", tiny_syn, "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "medgan batch: interrupted"  # the terminal: its one line only
    last = (out / "medgan.log").read_text().strip().splitlines()[-1]
    assert "interrupted" in last and "manifest.jsonl" in last and "rerun resumes" in last, last
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")] == ["done"]

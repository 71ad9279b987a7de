"""A label map given to an evaluation that would interpolate it is refused in words about the evaluation.

``medgan evaluate --resample`` / ``medgan batch evaluate --resample`` with ``--lr`` and a label-map reference
(a ``medgan labels`` output) stopped with ``medgan.degrade``'s refusal, "degradation would mix its label values into
fractions; resample a label map with nearest neighbour instead, e.g. medgan.interpolate(labels, factor, order=0)":
a step the user never asked for (LR consistency degrades the reference to find its grid), and advice to interpolate
a map that is no image to score. A label-map LR input got the interpolation's refusal ("spline interpolation
(order 1)"). :meth:`medgan.eval.compare.Evaluation.add` now names the evaluation step and what to do.

Real data: crops of the shipped MNI ICBM152 T1 and of its tissue label map (GM / WM maps), saved by medgan.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA

import medgan
from medgan.errors import EvaluationError
from medgan.eval.compare import Evaluation
from pipelines.cli import main

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(60, 92), slice(70, 102), slice(74, 82))  # 32 x 32 x 8 voxels inside the brain
SHIFTED = (slice(61, 93), slice(70, 102), slice(74, 82))  # one voxel along x: off the reference grid

pytestmark = pytest.mark.skipif(
    not all((MNI / f"{n}.nii.gz").is_file() for n in ("t1", "gm", "wm")), reason="sample_data MNI maps missing"
)

#: what the evaluation says, and what the old refusals said instead
ADVICE = re.compile(r"a label map is not an image to score .*Dice\); evaluate the intensity scan")
#: the old refusals' words, and advice to resample a map that no evaluation scores anyway
WRONG_STEP = ("degradation would", "spline interpolation", "medgan.interpolate(labels", "resample_to")


def _crop(name: str, box: tuple[slice, ...], dst: Path) -> Path:
    """``dst``: the shipped MNI map ``name`` cropped to ``box`` by nibabel (affine moved with the crop)."""
    img = nib.load(MNI / f"{name}.nii.gz").slicer[box]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), dst)
    return dst


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """``t1`` (reference), ``labels`` (its tissue label map, saved by medgan: label names and NIfTI intent 1002),
    ``lr`` (the T1 degraded x2 in-plane) and ``pred`` (a T1 crop one voxel off the reference grid)."""
    from medgan.data.labels import tissue_labels

    root = tmp_path_factory.mktemp("labelmap_eval")
    t1 = _crop("t1", BOX, root / "src" / "t1.nii.gz")
    gm, wm = (_crop(n, BOX, root / "src" / f"{n}.nii.gz") for n in ("gm", "wm"))
    t1_scan = medgan.load_scan(t1)
    labels = tissue_labels(medgan.load_scan(gm), medgan.load_scan(wm), t1=t1_scan)
    return {
        "t1": t1,
        "labels": medgan.save_scan(labels, root / "labels.nii.gz"),
        "lr": medgan.save_scan(medgan.degrade(t1_scan, (2, 2, 1)), root / "lr.nii.gz"),
        "pred": _crop("t1", SHIFTED, root / "pred.nii.gz"),
    }


def _assert_evaluation_words(text: str, role: str, step: str) -> None:
    assert f"is a label map (it declares label names), given as the {role} to {step}: " in text
    assert ADVICE.search(text), text
    assert not any(w in text for w in WRONG_STEP), text


def test_a_label_map_reference_under_resample_names_the_evaluation(scans):
    load = medgan.load_scan
    pred, lr = load(scans["pred"]), load(scans["lr"])
    # the intensity reference: the same inputs are scored (the prediction resampled onto its grid)
    rows = Evaluation(max_montages=0).add("t1", pred, load(scans["t1"]), lr=lr, resample=True)
    assert rows[0]["geometry"].startswith("prediction resampled onto the reference grid")
    assert rows[0]["psnr"] > 30  # scored (inf: the covered voxels are the reference's own, one voxel along)
    with pytest.raises(EvaluationError) as err:
        Evaluation(max_montages=0).add("t1", pred, load(scans["labels"]), lr=lr, resample=True)
    _assert_evaluation_words(str(err.value), "reference", "Evaluation.add(..., resample=True)")


def test_a_label_map_marked_only_by_its_nifti_intent_is_refused_too(scans, tmp_path):
    """Without the sidecar's label names the map is known by its header's intent code 1002 (NIFTI_INTENT_LABEL)."""
    bare = tmp_path / "labels.nii.gz"
    bare.write_bytes(scans["labels"].read_bytes())  # the image alone, not its JSON sidecar
    ref = medgan.load_scan(bare)
    assert not ref.meta.get("labels")
    with pytest.raises(EvaluationError, match=r"intent code is 1002, NIFTI_INTENT_LABEL\), given as the reference to "):
        Evaluation(max_montages=0).add("t1", medgan.load_scan(scans["pred"]), ref, resample=True)


def test_a_label_map_lr_input_names_the_interpolation_baselines(scans):
    """Without --resample: the baselines interpolate the LR input (it got interpolate's own refusal)."""
    load = medgan.load_scan
    with pytest.raises(EvaluationError) as err:
        Evaluation(max_montages=0).add("t1", load(scans["t1"]), load(scans["t1"]), lr=load(scans["labels"]))
    _assert_evaluation_words(str(err.value), "LR input", "the interpolation baselines")


def test_medgan_evaluate_resample_with_a_label_map_reference(scans, tmp_path, capsys):
    args = ["evaluate", "--pred", str(scans["pred"]), "--ref", str(scans["labels"]), "--lr", str(scans["lr"])]
    code = main([*args, "--resample", "--out", str(tmp_path / "out"), "--max-montages", "0"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("medgan evaluate: error: "), err
    _assert_evaluation_words(err, "reference", "medgan evaluate --resample")
    assert not (tmp_path / "out").exists()  # nothing written


def test_medgan_batch_evaluate_resample_records_the_evaluation_refusal(scans, tmp_path):
    trees = {name: tmp_path / name for name in ("pred", "ref", "lr")}
    for tree, src in (("pred", "pred"), ("ref", "labels"), ("lr", "lr")):
        (trees[tree] / "a").mkdir(parents=True)
        (trees[tree] / "a" / "t1.nii.gz").write_bytes(scans[src].read_bytes())
    sidecar = scans["labels"].with_name("labels.json")
    (trees["ref"] / "a" / "t1.json").write_text(
        json.dumps({**json.loads(sidecar.read_text()), "image_file": "t1.nii.gz"})
    )
    out = tmp_path / "eval"
    args = ["batch", "evaluate", str(trees["pred"]), str(trees["ref"]), str(out), "--lr", str(trees["lr"])]
    assert main([*args, "--resample", "--quiet", "--workers", "1"]) == 3  # some scans failed
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed"]
    _assert_evaluation_words(rows[0]["error"], "reference", "medgan batch evaluate --resample")


def test_a_label_map_is_not_scored_even_on_the_reference_grid(scans):
    """Nothing to resample, nothing to interpolate: a label map as prediction or reference still gave a table of
    numbers (a masked PSNR of -39 dB) that measured nothing."""
    load = medgan.load_scan
    t1, labels = load(scans["t1"]), load(scans["labels"])
    assert medgan.evaluate(t1, t1)["psnr"] == float("inf")  # the same grid and an intensity image: scored
    for pred, ref, role in ((t1, labels, "reference"), (labels, t1, "prediction")):
        with pytest.raises(EvaluationError, match=rf"given as the {role} to score: a label map is not an image"):
            medgan.evaluate(pred, ref)
        with pytest.raises(EvaluationError) as err:
            Evaluation(max_montages=0).add("t1", pred, ref, baselines=None)
        _assert_evaluation_words(str(err.value), role, "Evaluation.add")
    with pytest.raises(EvaluationError, match="given as the low-resolution input to score"):
        medgan.evaluate(t1, t1, lr=labels)  # LR consistency would degrade the reference onto the map's grid

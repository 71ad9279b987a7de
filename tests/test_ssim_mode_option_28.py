"""``--ssim-mode`` of ``medgan evaluate`` and ``medgan batch evaluate`` (session 28, statrev review).

The report's note on scans mixing 3-D and per-slice SSIM windows told the user to "use --ssim-mode / ssim_mode to
score every scan alike", but neither command had such an option; the batch job must also not reuse rows scored
with another mode. Real data: a crop of the MNI ICBM152 2009a T1 template (3-D windows under ``auto``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import medgan
from medgan.eval.compare import SSIM_MODES, Evaluation
from medgan.eval.metrics import evaluate
from medgan.eval.report import build_document
from medgan.io.scan import make_scan
from pipelines.batch.manifest import read_rows
from pipelines.batch.spec import load_spec
from pipelines.cli import main
from pipelines.commands.evaluate import SSIM_MODE_CHOICES

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """ref/s1/t1.nii.gz (an isotropic 40 x 40 x 30 crop: 3-D SSIM under auto) and pred/s1/t1.nii.gz (noisy)."""
    root = tmp_path_factory.mktemp("ssimmode")
    t1 = medgan.load_scan(MNI)
    ref = np.asarray(t1)[:, 40:80, 50:90, 60:90].astype(np.float32)
    pred = ref + np.random.default_rng(0).normal(0, 3, ref.shape).astype(np.float32)
    affine = np.asarray(t1.affine)
    for kind, data in (("ref", ref), ("pred", pred)):
        (root / kind / "s1").mkdir(parents=True)
        medgan.save_scan(make_scan(data, affine, {"modality": "MR"}), root / kind / "s1" / "t1.nii.gz")
    return root / "pred", root / "ref", pred, ref


def _sr_rows(report: Path) -> list[dict]:
    return [r for r in json.loads((report / "metrics.json").read_text())["rows"] if r["method"] == "SR"]


def test_the_mixed_window_note_names_options_that_exist(capsys):
    t1 = np.asarray(medgan.load_scan(MNI)).astype(np.float64)[:, 40:80, 50:90, 60:90]
    ev = Evaluation(method="SR", max_montages=0)
    ev.add("thick", t1[..., :6] + 1, t1[..., :6])
    ev.add("iso", t1 + 1, t1)
    assert any("--ssim-mode" in n for n in build_document(ev)["notes"])
    for command in (["evaluate"], ["batch", "evaluate"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--ssim-mode {auto,2d,3d}" in text, command


def test_the_choices_are_the_api_s(pair):
    _, _, pred, ref = pair
    assert SSIM_MODE_CHOICES == SSIM_MODES
    for mode in SSIM_MODES:  # every choice is one medgan.evaluate takes
        assert evaluate(pred, ref, ssim_mode=mode)["ssim_mode"]


def test_medgan_evaluate_passes_the_mode_through(pair, tmp_path):
    pred_root, ref_root, pred, ref = pair
    base = ["evaluate", "--pred", str(pred_root), "--ref", str(ref_root), "--max-montages", "0"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert main([*base, "--out", str(tmp_path / "2d"), "--ssim-mode", "2d"]) == 0
    (auto,), (two,) = _sr_rows(tmp_path / "auto"), _sr_rows(tmp_path / "2d")
    assert auto["ssim_mode"] == "3d" and two["ssim_mode"].startswith("2d-slices")
    assert two["hfen_mode"] == two["ssim_mode"]
    assert two["ssim"] == pytest.approx(evaluate(pred, ref, ssim_mode="2d")["ssim"], rel=1e-6)
    assert abs(two["ssim"] - auto["ssim"]) > 1e-4  # another measurement, not a relabelled one


def test_batch_evaluate_redoes_rows_scored_with_another_mode(pair, tmp_path):
    pred_root, ref_root, _, _ = pair
    out = tmp_path / "out"
    base = ["batch", "evaluate", str(pred_root), str(ref_root), str(out), "--max-montages", "0", "--quiet"]
    assert main(base) == 0
    assert _sr_rows(out / "report")[0]["ssim_mode"] == "3d"
    # another mode: the scan is scored again, not its 3-D row carried into a report of per-slice SSIM
    assert main([*base, "--ssim-mode", "2d"]) == 0
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "done"
    assert _sr_rows(out / "report")[0]["ssim_mode"].startswith("2d-slices")
    assert main([*base, "--ssim-mode", "2d"]) == 0  # the same mode again: reused
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "skipped"
    assert main(base) == 0  # back to auto: redone
    assert read_rows(out / "manifest.jsonl")[-1]["status"] == "done"
    assert _sr_rows(out / "report")[0]["ssim_mode"] == "3d"


def test_a_spec_takes_ssim_mode(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("job: evaluate\npred: p\nref: r\noutput: o\nssim_mode: 2d\n")
    assert load_spec(spec).params["ssim_mode"] == "2d"
    spec.write_text("job: evaluate\npred: p\nref: r\noutput: o\n")
    assert load_spec(spec).params["ssim_mode"] == "auto"
    spec.write_text("job: evaluate\npred: p\nref: r\noutput: o\nssim_mode: 2.5d\n")
    with pytest.raises(medgan.errors.ConfigError, match="ssim_mode"):
        load_spec(spec)

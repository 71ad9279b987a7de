"""Reusable metrics for synthetic-image evaluation (medgan.eval.synthetic) and the shipped-model cards."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.errors import MedganError
from medgan.eval.synthetic import (
    frechet_distance,
    kernel_distance,
    linear_mmd,
    mean_sd,
    memorisation_summary,
    nearest_neighbour,
    roc_auc,
)
from medgan.infer.pretrained import PRETRAINED_DIR


def test_roc_auc_matches_hand_count_with_ties() -> None:
    neg, pos = [0.1, 0.4, 0.35, 0.8], [0.9, 0.4, 0.7]
    # pairs (pos > neg) + 0.5 (tie): 0.9 beats 4; 0.4 beats 0.1, 0.35, ties 0.4; 0.7 beats 0.1, 0.4, 0.35
    assert roc_auc(neg, pos) == pytest.approx((4 + 2.5 + 3) / 12)
    assert roc_auc([0, 1], [2, 3]) == 1.0 and roc_auc([2, 3], [0, 1]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(MedganError):
        roc_auc([], [1.0])


def test_frechet_and_kernel_distances() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(400, 8))
    shifted = rng.normal(size=(400, 8)) + 1.0
    # same distribution: small; a mean shift of 1 in 8 dims: |mu|^2 ~ 8
    assert frechet_distance(a, b) < 0.5
    assert frechet_distance(a, shifted) == pytest.approx(8.0, rel=0.2)
    assert abs(kernel_distance(a, b)) < 0.05 < kernel_distance(a, shifted)
    assert abs(linear_mmd(a, b)) < 0.1 and linear_mmd(a, shifted[:300]) == pytest.approx(8.0, rel=0.25)
    with pytest.raises(MedganError):
        frechet_distance(a, rng.normal(size=(10, 3)))


def test_nearest_neighbour_and_memorisation_summary() -> None:
    rng = np.random.default_rng(1)
    train = rng.random((20, 16, 16))
    copies = train[[3, 7]] + 1e-3  # near-copies of training images
    held_out = rng.random((5, 16, 16))
    d_copy, idx = nearest_neighbour(copies, train)
    assert list(idx) == [3, 7] and np.allclose(d_copy, 1e-3)  # RMSE of a constant 1e-3 offset
    d_real, _ = nearest_neighbour(held_out, train)
    assert (d_real > 0.2).all()
    summary = memorisation_summary(d_copy, d_real)
    assert summary["frac_below_real_min"] == 1.0 and summary["ratio"] < 0.01
    fresh = memorisation_summary(nearest_neighbour(rng.random((6, 16, 16)), train)[0], d_real)
    assert 0.7 < fresh["ratio"] < 1.3
    d_l2, _ = nearest_neighbour(np.zeros((1, 3)), np.array([[3.0, 4.0, 0.0], [10.0, 0, 0]]), metric="l2")
    assert d_l2[0] == pytest.approx(5.0)


def test_mean_sd_format() -> None:
    assert mean_sd([1.0, 2.0, 3.0], ".2f") == "2.00 ± 1.00"
    assert mean_sd([float("nan")]) == "n/a"


def test_every_shipped_checkpoint_has_a_model_card() -> None:
    for path in PRETRAINED_DIR.glob("*.safetensors"):
        assert path.with_suffix(".md").is_file(), f"{path.name} has no model card (python -m medgan.infer.pretrained)"


def test_scipy_fallback_equals_monai_formula() -> None:
    from medgan.eval.synthetic import _frechet_scipy

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) * 1.5 + 0.3
    assert _frechet_scipy(a, b) == pytest.approx(frechet_distance(a, b), rel=1e-6)


def test_frechet_distance_of_one_feature() -> None:
    """(N, 1) features (one scalar per image, e.g. a mean intensity): MONAI's covariance squeezes to a 0-d tensor
    and its matrix product raised a raw RuntimeError; in 1-D the distance is (mu_a - mu_b)^2 + (sd_a - sd_b)^2."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 1)), rng.normal(size=(200, 1)) * 2.0 + 1.0
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_detector_card_states_the_measured_score_of_every_real_sample_scan() -> None:
    """The card lists every real sample scan's measured score at its own size, and every one is below 0.5. The
    detector shipped before 2026-12-06 called the real CT synthetic (0.685) although it was a real training slice:
    the benchmark zero-padded every non-MNI real slice to 155 x 192 and never the synthetic ones, so a constant frame
    meant 'real'. Both classes are now tiled into crops of one size."""
    import re
    from pathlib import Path

    import medgan
    from medgan.infer.detect import DEFAULT_DETECTOR, SyntheticDetector, _scan_slices

    repo = Path(__file__).resolve().parents[1]
    card = (PRETRAINED_DIR / "synthetic-detector.md").read_text(encoding="utf-8").split("<!-- notes -->", 1)[1]
    rows = re.findall(r"^\| `(sample_data/[^`]+)` \| [^|]+ \| ([0-9.]+) \| (\d+) \| (\d+) \|$", card, flags=re.M)
    listed = {path for path, *_ in rows}
    # every real scan in sample_data: each DICOM series folder and each NIfTI image (the MNI gm / wm are tissue maps)
    expected = {str(p.relative_to(repo)) for p in (repo / "sample_data/dicom").iterdir() if p.is_dir()}
    expected |= {
        str(p.relative_to(repo))
        for p in (repo / "sample_data/nifti").rglob("*.nii*")
        if p.name not in ("gm.nii.gz", "wm.nii.gz")
    }
    assert listed == expected, (sorted(listed), sorted(expected))
    detector = SyntheticDetector.from_file(DEFAULT_DETECTOR, device="cpu")
    for path, score, n_scored, n_flagged in rows:
        scan = medgan.load_scan(repo / path)
        got = medgan.detect_synthetic(scan, detector=detector)
        assert got == pytest.approx(float(score), abs=0.0015), path
        assert got < 0.5, (path, got)  # real, at its own size
        slices = _scan_slices(scan, 2, 32)
        per_slice = np.concatenate([detector.score_slices([s]) for s in slices])
        assert (len(per_slice), int((per_slice > 0.5).sum())) == (int(n_scored), int(n_flagged)), path
    assert "constant frame" in card and "never padded" in card


def test_shipped_detector_calls_the_real_ct_real_at_its_own_size() -> None:
    """The real CT slice (128 x 128, HU) scored 0.685 with the detector trained on padded real slices."""
    from pathlib import Path

    import medgan
    from medgan.infer.detect import DEFAULT_DETECTOR, SyntheticDetector

    ct = medgan.load_scan(Path(__file__).resolve().parents[1] / "sample_data/dicom/pydicom_ct_small")
    detector = SyntheticDetector.from_file(DEFAULT_DETECTOR, device="cpu")
    assert medgan.detect_synthetic(ct, detector=detector) < 0.5
    # units and orientation do not matter: per-slice normalisation, and no frame to key on
    pixels = ct[0].numpy()
    assert detector.score_slices([pixels + 1024.0, pixels.T, pixels[::-1]]).max() < 0.5


def test_shipped_detector_flags_a_synthetic_slice_whole_framed_and_cropped() -> None:
    """A slice that the shipped generator made from a held-out label map scores > 0.5 whole, inside a constant
    frame and as a centre crop. The detector shipped before 2026-12-06 scored it 0.77 whole but 0.000 in an 8 px
    mid-grey frame and <= 0.005 centre-cropped to 128 x 160 or smaller."""
    from pathlib import Path

    import medgan
    from medgan.data.labels import tissue_labels
    from medgan.infer.detect import DEFAULT_DETECTOR, SyntheticDetector
    from medgan.infer.synthesis import Synthesizer

    mni = Path(__file__).resolve().parents[1] / "sample_data/nifti/mni_icbm152_2009a_sym"
    gm, wm, t1 = (medgan.load_scan(mni / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    synth = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    detector = SyntheticDetector.from_file(DEFAULT_DETECTOR, device="cpu")
    n_slices = labels.shape[3]
    for k in (77, 83):  # inside the generator's held-out slab (training slices exclude 70-89)
        fake = synth.generate(labels[..., k], n=1, seed=k, condition={"scalar": k / (n_slices - 1)})
        fake = np.squeeze(fake.as_tensor().numpy())
        assert fake.shape == (155, 192)
        # constant frames in the image's own units: background (0 here) and mid-grey, which makes an edge (the old
        # detector scored the mid-grey frame 0.000)
        grey = 0.5 * float(np.percentile(fake, 99.5))
        inputs = {
            "whole": fake,
            "8 px background frame": np.pad(fake, 8, constant_values=float(fake.min())),
            "8 px mid-grey frame": np.pad(fake, 8, constant_values=grey),
            "16 px mid-grey frame": np.pad(fake, 16, constant_values=grey),
            "centre 128 x 160": fake[13:141, 16:176],
            "centre 96 x 96": fake[29:125, 48:144],
        }
        for name, x in inputs.items():
            assert medgan.detect_synthetic(x[None], detector=detector) > 0.5, (k, name)

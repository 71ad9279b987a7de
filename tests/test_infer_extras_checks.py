"""Checks of the inference extras on real scans: what detect_synthetic can judge, what adapt_to_scan keeps and
records, upscale's axes, and the device names inference takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import mni_t1_path

import medgan
from medgan.errors import MedganError
from medgan.infer.adapt import adapt_to_scan
from medgan.infer.detect import DEFAULT_DETECTOR, SyntheticDetector
from medgan.infer.device import resolve_device

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def t1():
    return medgan.load_scan(mni_t1_path())


@pytest.fixture(scope="module")
def detector():
    return SyntheticDetector.from_file(DEFAULT_DETECTOR, device="cpu")


def test_detect_synthetic_refuses_slices_smaller_than_it_can_judge(t1, detector):
    """Real 16 x 16 crops scored up to 1.0, a 1-px row 0.40 and 5-px strips across slices 0.85 ("synthetic")."""
    small = {
        "16 x 16 crop": (t1[:, 69:85, 88:104, 80], 2),
        "1-px row": (t1[:, 77:78, :, 80], 2),
        "5 slices along axis 0": (t1[:, :, :, 60:100:8], 0),
    }
    for what, (scan, axis) in small.items():
        with pytest.raises(MedganError, match=r"smaller than the detector can judge \(at least 32x32 px") as err:
            medgan.detect_synthetic(scan, detector=detector, axis=axis)
        assert "64x64" in str(err.value), what
    assert detector.training_shape == (64, 64) and detector.min_slice_shape == (32, 32)
    # real slices of a size it judges still score as real: a 32 x 32 crop and the 33 x 41 anatomical.nii
    assert medgan.detect_synthetic(t1[:, 61:93, 80:112, 80], detector=detector) < 0.5
    anatomical = medgan.load_scan(REPO / "sample_data/nifti/nibabel/anatomical.nii")
    assert medgan.detect_synthetic(anatomical, detector=detector) < 0.5
    # the same slab along the slice axis it was taken in is judged
    assert medgan.detect_synthetic(t1[:, 20:132, 30:158, 60:100:8], detector=detector, axis=2) < 0.5


@pytest.fixture(scope="module")
def slab(t1):
    return t1[:, 40:104, 60:124, 60:62]


def test_adapted_resolver_keeps_the_context_and_records_a_chain(slab):
    """context="full" fell back to "half" after adaptation; adapting twice kept only the second record; the
    degradation record lacked the slice profile, and the thread count the weights depend on was not recorded."""
    sr = medgan.SuperResolver("brain-mr-x2-2d", device="cpu", context="full", precision="fp32")
    first = adapt_to_scan(sr, slab, steps=2, seed=1, patch_size=32, batch_size=2)
    assert first.context == sr.context
    out = first.upscale(slab)
    assert out.meta["medgan"]["context"] == list(sr.context)
    record = out.meta["medgan"]["adaptation"]
    assert record["degradation"]["slice_profile"] == "box"
    assert record["torch_threads"] == torch.get_num_threads() == 1 and record["device"] == "cpu"
    assert "previous" not in record
    second = adapt_to_scan(first, slab, steps=1, seed=2, patch_size=32, batch_size=2)
    chain = second.upscale(slab).meta["medgan"]["adaptation"]
    assert (chain["steps"], chain["seed"]) == (1, 2)
    assert [r["weights_sha256"] for r in chain["previous"]] == [first.adaptation["weights_sha256"]]
    assert chain["previous"][0]["steps"] == 2 and "previous" not in chain["previous"][0]
    third = adapt_to_scan(second, slab, steps=0, seed=3)
    assert [r["seed"] for r in third.adaptation["previous"]] == [1, 2]


def test_upscale_refuses_axes_that_are_not_integers(slab):
    """int() truncated (0.9, 1.9) to (0, 1) and read '01' as (0, 1): the model upsampled other axes than meant."""
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    for axes, pattern in [((0.9, 1.9), "must be an integer"), ("01", "sequence of integers"), ((True, 2), "integer")]:
        with pytest.raises(MedganError, match=pattern):
            sr.upscale(slab, axes=axes)
        with pytest.raises(MedganError, match=pattern):  # the same refusal as adapt_to_scan's
            adapt_to_scan(sr, slab, steps=0, axes=axes)
    out = sr.upscale(slab, axes=torch.tensor([0, 1]))
    assert out.meta["medgan"]["axes"] == [0, 1] and tuple(out.shape[1:]) == (128, 128, 2)


def test_device_names_at_inference():
    """'auto' (the training configs' word) and 'CPU' were refused with torch's list of 20 device types; an integer
    without CUDA said "Cannot access accelerator device"; the Python API told users to pass --device."""
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device("AUTO") == resolve_device(None) == auto
    assert resolve_device("CPU") == resolve_device(" cpu ") == torch.device("cpu")
    assert medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="auto").device == auto
    for bad in ("gpu", "", 1.5, True):
        with pytest.raises(MedganError, match=r"use 'cpu', 'cuda', 'cuda:N'.*'auto'") as err:
            resolve_device(bad)
        assert "privateuseone" not in str(err.value) and "--device" not in str(err.value)
    if not torch.cuda.is_available():
        for bad in (0, "cuda", "CUDA:0"):
            with pytest.raises(MedganError, match="CUDA is not available") as err:
                resolve_device(bad)
            assert "--device" not in str(err.value)

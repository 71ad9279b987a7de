"""What train_detector trains on and how it weighs the classes, on real MNI T1 slices.

The real class is 32 x 32 crops of axial slices of the shipped MNI T1; the "fake" class is the same crops smoothed
(as a generator's output is smoother than a scan). A tiny network, full batches and a few epochs keep each run
well under a second.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from scipy import ndimage

from medgan.infer.detect import train_detector

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: a tiny detector: each run trains in a fraction of a second on one CPU thread
TINY = {"channels": 4, "n_levels": 2, "augment": False, "device": "cpu", "lr": 1e-2}


@pytest.fixture(scope="module")
def crops() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Eight real 32 x 32 crops of MNI T1 axial slices, four smoothed ones, and spare real crops (other slices)."""
    t1 = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    real = [t1[60:92, 80:112, z] for z in range(50, 130, 4)]  # 20 non-constant crops inside the head
    assert all(np.ptp(s) > 0 for s in real)
    return real, [ndimage.gaussian_filter(s, 1.5) for s in real]


def test_validation_slices_are_not_trained_on(crops, tmp_path: Path) -> None:
    """val_fraction holds slices out of training: replacing a held-out real slice leaves the trained weights
    bit-for-bit the same, and exactly round(val_fraction * n) real slices are such. (A split that trained on every
    slice and also "validated" on some reported a val_accuracy on slices the network had learnt.)"""
    real, fake = crops[0][:5], crops[1][:4]
    spare = crops[0][10]  # another real slice, not among the five
    kwargs = {**TINY, "epochs": 3, "batch_size": 16, "val_fraction": 0.4, "seed": 3}
    base = train_detector(real, fake, tmp_path / "base.safetensors", **kwargs)
    assert base.metadata["training_data"]["n_real"] == 5
    # the record says what each accuracy rests on: round(0.4 * 5) = 2 real, round(0.4 * 4) = 2 synthetic held out
    assert base.metadata["training_data"]["n_train"] == [3, 2]
    assert base.metadata["training_data"]["n_val"] == [2, 2]
    unchanged = []
    for i in range(len(real)):
        swapped = [spare if k == i else s for k, s in enumerate(real)]
        ckpt = train_detector(swapped, fake, tmp_path / f"swap{i}.safetensors", **kwargs)
        if ckpt.payload_sha256 == base.payload_sha256:
            unchanged.append(i)
            assert ckpt.metadata["calibration"] == base.metadata["calibration"]
    # round(0.4 * 5) = 2 real slices are held out; every other one shapes the weights
    assert len(unchanged) == 2, unchanged


def test_class_weights_make_the_class_sizes_irrelevant(crops, tmp_path: Path) -> None:
    """Each class weighs half of the loss however many slices it has: giving every real slice twice (real sets are
    often larger) trains the same network. Without the weights the larger class pulled the loss towards itself.

    Full batches make one epoch one gradient step on the whole loss, so the shuffling the extra slices change does
    not matter; the slices are made mirror-symmetric so that the random flips (drawn differently for another
    slice count) do not either."""

    def symmetric(s: np.ndarray) -> np.ndarray:
        s = s + s[:, ::-1]  # float addition commutes: exactly symmetric
        return np.ascontiguousarray(s + s[::-1])

    real = [symmetric(s) for s in crops[0][:6]]
    fake = [symmetric(s) for s in crops[1][:2]]
    kwargs = {**TINY, "epochs": 4, "batch_size": 64, "seed": 0}
    once = train_detector(real, fake, tmp_path / "once.safetensors", **kwargs)
    twice = train_detector(real + real, fake, tmp_path / "twice.safetensors", **kwargs)
    assert twice.metadata["training_data"]["n_real"] == 12
    assert once.state_dict.keys() == twice.state_dict.keys()
    moved = max(
        float((once.state_dict[k] - twice.state_dict[k]).abs().max() / once.state_dict[k].abs().max().clamp(min=1e-12))
        for k in once.state_dict
    )
    assert moved < 1e-4, moved
    # the weights did train (else equal weights would prove nothing)
    fresh = train_detector(real, fake, tmp_path / "one-step.safetensors", **{**kwargs, "epochs": 1})
    assert any(not torch.equal(fresh.state_dict[k], once.state_dict[k]) for k in once.state_dict)

"""The self-supervised pairs of scan adaptation on a real T1 slab: the validation pairs that pick the kept weights
are not training batches, and each batch is a function of (seed, key, step) alone."""

from __future__ import annotations

import numpy as np
import torch
from conftest import mni_t1_path

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.infer.adapt import _normalise, _PairSampler, _sources, model_degradation


def _sampler(seed: int = 0) -> _PairSampler:
    slab = crop_to_multiple(medgan.load_scan(mni_t1_path())[:, 30:126, 48:144, 78:80], (2, 2, 1))
    sr = medgan.SuperResolver("brain-mr-x2-2d", device="cpu")
    vol = _normalise(slab.as_tensor().float(), sr.normalization_rule, sr.in_channels)
    sources, off, mode, _ = _sources(vol, sr, (0, 1))
    assert (off, mode) == (1, "zssr")
    return _PairSampler(
        sources,
        off=off,
        factor=sr.factor,
        patch=(32, 32),
        batch_size=2,
        degradation=model_degradation(sr.metadata),
        in_channels=sr.in_channels,
        seed=seed,
    )


def test_validation_pairs_are_not_training_batches():
    """Validation (key 1) scored on the very patches the first steps trained on (key 0) would keep the weights
    that fit those patches best, not the ones that generalise over the scan."""
    sampler = _sampler()
    for step in range(2):
        train_lr, train_hr = sampler.batch(0, step)
        val_lr, val_hr = sampler.batch(1, step)
        assert train_hr.shape == val_hr.shape == (2, 1, 32, 32) and train_lr.shape == (2, 1, 16, 16)
        assert not torch.equal(train_hr, val_hr)
    again_lr, again_hr = sampler.batch(0, 1)
    np.testing.assert_array_equal(again_hr.numpy(), sampler.batch(0, 1)[1].numpy())
    assert not torch.equal(_sampler(seed=1).batch(0, 0)[1], sampler.batch(0, 0)[1])


def test_a_degradation_without_slice_profile_is_the_trainers_box():
    """train-sr degrades with a box slice profile when its config names none, and a checkpoint records the config
    as given: adaptation must make its thick slices the same way (another profile gives other pairs)."""
    sr = medgan.SuperResolver("brain-mr-through-plane-x4", device="cpu")
    recorded = dict(sr.metadata.get("degradation") or sr.metadata["training_data"]["degradation"])
    recorded.pop("slice_profile", None)
    deg = model_degradation({"training_data": {"degradation": recorded}})
    assert deg["methods"] == ["thick_slice"] and deg["slice_profile"] == "box"


def test_a_one_channel_model_normalises_each_channel_as_upscale_does():
    """A one-channel model on a two-channel scan: upscale fits the normalisation on each channel alone, so the
    adaptation pairs must be cut from each channel normalised on its own (one joint fit put the channel of small
    values near zero, pairs unlike anything the adapted model then sees)."""
    from medgan.data.normalize import Normalization

    slab = crop_to_multiple(medgan.load_scan(mni_t1_path())[:, 30:126, 48:144, 78:80], (2, 2, 1))
    two = medgan.io.scan.make_scan(torch.cat([slab.as_tensor(), slab.as_tensor() * 10.0]).float(), slab.affine)
    sr = medgan.SuperResolver("brain-mr-x2-2d", device="cpu", precision="fp32")
    fitted = sr.upscale(two).meta["medgan"]["normalization"]
    vol = _normalise(two.as_tensor(), sr.normalization_rule, sr.in_channels)
    assert vol.shape == tuple(two.shape)
    for c in range(2):
        expected = Normalization.from_dict(fitted[c]).apply(two.as_tensor()[c : c + 1].numpy())
        np.testing.assert_allclose(vol[c : c + 1], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vol[0], vol[1], rtol=1e-5, atol=1e-5)

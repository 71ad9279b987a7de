"""A one-channel model trained on a multi-volume (4-D) scan must see every volume, not only the first.

Mutation that survived the suite: ``PatchSampler._sample_views`` drawing ``ch = 0`` instead of a random channel
(the docstring promises "one random channel"): a multi-echo / multi-volume training set silently trained on its
first volume alone.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conftest import MNI_T1

from medgan.data.patches import PatchSampler, load_volumes

T1 = MNI_T1


def test_one_channel_model_draws_patches_from_every_volume_of_a_4d_scan(tmp_path):
    t1 = np.asarray(nib.load(T1).dataobj, dtype=np.float32)[50:90, 60:100, 50:90]
    # three volumes on disjoint intensity ranges (the MNI T1 is 0..255): a patch's values name its volume
    four_d = np.stack([t1, t1 + 1000.0, t1 + 2000.0], axis=-1)
    path = tmp_path / "three_volumes.nii.gz"
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), path)
    (vol,) = load_volumes([str(path)], {"method": "percentile", "lower": 0.5, "upper": 99.5})
    assert vol["image"].shape[0] == 3
    norm = vol["normalization"]
    sampler = PatchSampler(
        [vol], patch_size=[8, 8, 8], factor=[2, 2, 2], batch_size=4, degradation={}, in_channels=1, seed=0
    )
    seen = set()
    for step in range(8):
        _, hr = sampler.batch(step)
        raw = hr.numpy() * norm["scale"] + norm["offset"]  # back to scanner units
        seen.update(int(np.median(p) // 1000) for p in raw)
    assert seen == {0, 1, 2}, f"patches came from volumes {sorted(seen)} only"

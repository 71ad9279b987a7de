"""tissue_labels on [0, 1] probability maps that cubic resampling pushed slightly above 1 (real MNI GM/WM maps)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import medgan
from medgan.data.labels import tissue_labels
from medgan.errors import MedganError
from medgan.io.scan import make_scan

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"


@pytest.fixture(scope="module")
def slab():
    if not (MNI / "gm.nii.gz").is_file():
        pytest.fail(f"{MNI} is missing: sample_data/ ships with the repository")
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    # a mid-brain slab keeps the test fast; the maps are probability x 255 (uint8 on disk)
    part = (slice(None), slice(None), slice(None), slice(80, 100))
    return gm[part], wm[part], t1[part]


def test_cubic_resampled_unit_maps_keep_their_tissue_labels(slab, caplog):
    gm, wm, t1 = slab
    affine = np.asarray(gm.affine)
    g, w = (np.asarray(m)[0] / 255.0 for m in (gm, wm))
    # a sub-voxel cubic B-spline shift, as registration tools resample: values overshoot 1 by about 2 %
    gs, ws = (ndimage.shift(m, (0.3, 0.2, 0.1), order=3) for m in (g, w))
    assert 1.0 < max(gs.max(), ws.max()) < 1.05
    with caplog.at_level(logging.WARNING, logger="medgan.data.labels"):
        lab = tissue_labels(make_scan(gs[None], affine), make_scan(ws[None], affine), t1=t1).numpy()
    expect = tissue_labels(
        make_scan(np.clip(gs, 0, 1)[None], affine), make_scan(np.clip(ws, 0, 1)[None], affine), t1=t1
    ).numpy()
    counts = np.bincount(lab.astype(int).ravel(), minlength=4)
    assert counts[2] > 0 and counts[3] > 0, f"grey / white matter lost: {counts}"
    np.testing.assert_array_equal(lab, expect)  # overshoot clipped to 1, not the maps divided by 255
    assert "overshoot" in caplog.text


def test_uint8_maps_are_still_read_as_0_to_255(slab):
    gm, wm, t1 = slab
    # the real 0..255 maps as uint8 arrays, and a corner where they hold only 0..2 of 255: still 0..255 maps
    g, w = (np.asarray(m)[0].astype(np.uint8) for m in (gm, wm))
    ref = tissue_labels(gm, wm, t1=t1).numpy()[0]
    np.testing.assert_array_equal(tissue_labels(g[None], w[None], t1=np.asarray(t1)).numpy()[0], ref)
    low = np.minimum(g, 2)[None], np.minimum(w, 1)[None]
    # probabilities <= 2/255 + 1/255: nothing reaches the brain threshold, an empty brain mask (an error since the
    # map would be all background); read as 0..1 maps, 3 would fill the mask instead
    with pytest.raises(MedganError, match=r"brain mask is empty.*largest is 0\.0118"):
        tissue_labels(*low)
    low_float = tuple(a.astype(np.float32) for a in low)  # load_scan's float32 copy of such a map
    with pytest.raises(MedganError, match=r"brain mask is empty.*largest is 0\.0118"):
        tissue_labels(*low_float)

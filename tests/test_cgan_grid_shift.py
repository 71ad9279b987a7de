"""Mutation-killing test for load_pairs: a map half a voxel off the image's grid is refused (1e-3 mm, not 1 mm)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_cgan_subject

from medgan import load_scan, save_scan
from medgan.data.cgan_data import load_pairs
from medgan.errors import MedganError
from medgan.io.scan import make_scan


def test_a_label_map_shifted_half_a_voxel_is_refused(tmp_path):
    """The real MNI crop's label map on the same shape but translated by 0.5 mm (half a 1 mm voxel, e.g. a map
    exported with a centre-versus-corner convention): every label sits half a voxel off its tissue. A tolerance of
    1 mm let it train; the check allows 1e-3 mm, as the evaluation's grid check does."""
    from medgan.data.labels import tissue_labels

    subject = mni_cgan_subject(tmp_path)
    t1 = load_scan(subject["image"])
    labels = tissue_labels(load_scan(subject["gm"]), load_scan(subject["wm"]), t1=t1)
    norm = {"method": "percentile", "lower": 0.0, "upper": 99.5}
    on_grid = save_scan(labels, tmp_path / "labels.nii.gz")
    assert len(load_pairs([{"image": subject["image"], "labels": str(on_grid)}], norm)) == 1
    affine = np.asarray(labels.affine, dtype=np.float64).copy()
    affine[0, 3] += 0.5
    shifted = save_scan(make_scan(labels.as_tensor().numpy(), affine, {}), tmp_path / "shifted.nii.gz")
    with pytest.raises(MedganError, match="is not on the grid"):
        load_pairs([{"image": subject["image"], "labels": str(shifted)}], norm)

"""A montage shows thick-slice planes in millimetres: a 32 x 32 x 32 mm block of the real MNI T1 stored as
32 x 32 x 8 voxels of 1 x 1 x 4 mm is three square tiles per column (its coronal and sagittal planes stretched
four times along the slice axis, the vertical one), not planes squashed to a quarter of their height and stretched
four times sideways."""

from __future__ import annotations

import numpy as np
from conftest import crop_scan, mni_t1_path

import medgan
from medgan.eval.figures import montage


def test_thick_slice_planes_are_shown_in_millimetres():
    block = crop_scan(medgan.load_scan(mni_t1_path()), slice(60, 92), slice(70, 102), slice(40, 72))
    thick = medgan.degrade(block, (1, 1, 4))
    assert thick.shape == (1, 32, 32, 8)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(thick.affine)[:3, :3], axis=0), (1, 1, 4))
    fig = montage({"LR": thick, "reference": thick}, affine=np.asarray(thick.affine))
    mosaic = fig.axes[0].images[0].get_array()
    gap = 4  # between tiles
    # 3 rows (axial, coronal, sagittal) x 3 columns (LR, reference, error), each tile 32 mm square
    side = (mosaic.shape[0] - 2 * gap) // 3
    assert mosaic.shape[:2] == (3 * side + 2 * gap, 3 * side + 2 * gap)
    # the coronal tile of the error column (all zero: LR is the reference) fills its square exactly
    row, col = side + gap, 2 * (side + gap)
    assert np.allclose(
        mosaic[row : row + side, col : col + side],
        mosaic[row + side // 2, col + side // 2],
    )

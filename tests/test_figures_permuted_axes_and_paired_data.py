"""Report figures on real data: montage planes of a scan stored with permuted axes, and what a paired plot plots.

The montage planes come from :func:`medgan.eval.figures.orthogonal_slices`, which reorients the array to RAS+
before cutting the planes; the voxel sizes must follow the axes, or a thick-slice scan stored in another axis order
is drawn squashed in one plane and stretched in another.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conftest import mni_t1_path
from scipy import ndimage

from medgan.eval import figures
from medgan.eval.metrics import psnr, ssim


def _thick_slice_t1() -> nib.Nifti1Image:
    """The shipped MNI T1 (RAS, 1 mm) with every third axial slice: 1 x 1 x 3 mm voxels, as a thick-slice scan."""
    img = nib.load(mni_t1_path())
    data = np.asarray(img.dataobj, dtype=np.float32)[:, :, ::3]
    affine = img.affine.copy()
    affine[:3, 2] *= 3
    return nib.Nifti1Image(data, affine)


def test_montage_planes_of_a_scan_stored_in_another_axis_order_are_the_same():
    """The 1 x 1 x 3 mm scan stored as P-I-R (array axes posterior, inferior, right; voxel sizes 1, 3, 1 mm) shows
    the same planes with the same pixel aspect as stored R-A-S: 3 (3 mm tall, 1 mm wide) for the coronal and
    sagittal planes, 1 for the axial. With the voxel sizes left in the stored order, the P-I-R scan's axial plane got
    aspect 1/3 and its coronal plane 1."""
    ras = _thick_slice_t1()
    pir = ras.as_reoriented(
        nib.orientations.ornt_transform(nib.io_orientation(ras.affine), nib.orientations.axcodes2ornt("PIR"))
    )
    assert nib.aff2axcodes(pir.affine) == ("P", "I", "R")
    np.testing.assert_allclose(nib.affines.voxel_sizes(pir.affine), [1, 3, 1])
    want = figures.orthogonal_slices(np.asarray(ras.dataobj)[None], ras.affine)
    got = figures.orthogonal_slices(np.asarray(pir.dataobj)[None], pir.affine)
    assert [(name, aspect) for name, _, aspect in want] == [("axial", 1.0), ("coronal", 3.0), ("sagittal", 3.0)]
    assert [name for name, _, _ in got] == [name for name, _, _ in want]
    for (name, img_got, aspect_got), (_, img_want, aspect_want) in zip(got, want, strict=True):
        assert aspect_got == aspect_want, name
        np.testing.assert_array_equal(img_got, img_want, err_msg=name)
    # the montage drawn from either is the same size: each row as tall as its physical extent
    sizes = [
        figures.montage({"scan": d[None], "reference": d[None]}, affine=a, cell=120).get_size_inches()
        for d, a in ((np.asarray(ras.dataobj), ras.affine), (np.asarray(pir.dataobj), pir.affine))
    ]
    np.testing.assert_allclose(sizes[0], sizes[1])


def test_paired_plot_puts_the_baseline_on_x_and_the_method_on_y():
    """One point per scan at (baseline score, method score), as the axis labels say: the PSNR and SSIM of a lightly
    and a heavily smoothed copy of three real MNI T1 axial slices against the slices themselves."""
    t1 = np.asarray(nib.load(mni_t1_path()).dataobj, dtype=np.float32)
    rows = []
    for k, z in enumerate((60, 80, 100)):
        ref = t1[None, :, :, z]  # a channel-first 2-D slice
        for method, sigma in (("light", 0.6), ("heavy", 2.0)):
            pred = ndimage.gaussian_filter(ref, (0, sigma, sigma))
            scores = {"psnr": psnr(pred, ref, data_range=255.0), "ssim": ssim(pred, ref, data_range=255.0)}
            rows.append({"scan_id": f"slab{k}", "method": method, **scores})
    fig = figures.paired_plot(rows, method="light", baseline="heavy")
    for ax, metric in zip(fig.axes, ("psnr", "ssim"), strict=True):
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("heavy", "light")
        points = ax.lines[0]
        want_x = [r[metric] for r in rows if r["method"] == "heavy"]
        want_y = [r[metric] for r in rows if r["method"] == "light"]
        np.testing.assert_allclose(points.get_xdata(), want_x)
        np.testing.assert_allclose(points.get_ydata(), want_y)
        # the lightly smoothed copy scores better on every slice: its points lie above the identity line
        assert all(y > x for x, y in zip(want_x, want_y, strict=True))
        labels = {t.get_text(): t.xy for t in ax.texts}
        for sid, x, y in zip(("slab0", "slab1", "slab2"), want_x, want_y, strict=True):
            np.testing.assert_allclose(labels[sid], (x, y))

"""Enhanced multi-frame DICOM: which functional group a frame's geometry and rescale come from.

The frame table reads each macro per frame when the Per-Frame Functional Groups hold it, else from the Shared
Functional Groups (:func:`medgan.io.dicom_frames._group_item`). Built from the corpus' real Philips enhanced MR file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import medgan

ENHANCED = "dicom2nifti_philips_enhanced_anatomical_001"


def _enhanced_file(corpus_dir: Path) -> Path:
    return next((corpus_dir / ENHANCED / "input").iterdir())


def test_per_frame_rescale_wins_over_a_shared_one(corpus_dir: Path, tmp_path: Path) -> None:
    # A file that also carries a (non-conformant) shared Pixel Value Transformation: each frame's own rescale
    # (slope ~4.26 here) is the one its stored values were written with; the shared identity would divide every
    # intensity by ~4.26 without a word.
    src = _enhanced_file(corpus_dir)
    ds = pydicom.dcmread(src)
    identity = Dataset()
    identity.RescaleSlope = "1"
    identity.RescaleIntercept = "0"
    identity.RescaleType = "US"
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = Sequence([identity])
    ds.save_as(tmp_path / "shared_rescale.dcm")

    original = medgan.load_scan(src)
    loaded = medgan.load_scan(tmp_path / "shared_rescale.dcm")

    assert np.array_equal(loaded.numpy(), original.numpy())
    assert np.allclose(np.asarray(loaded.affine), np.asarray(original.affine))


def _one_frame(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The first frame of an enhanced file as a one-frame enhanced file, without the top-level SpacingBetweenSlices."""
    frame_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    one = copy.deepcopy(ds)
    one.NumberOfFrames = 1
    one.PerFrameFunctionalGroupsSequence = Sequence([one.PerFrameFunctionalGroupsSequence[0]])
    one.PixelData = ds.PixelData[:frame_bytes]
    del one.SpacingBetweenSlices
    return one


def test_one_frame_enhanced_file_takes_its_slice_depth_from_the_per_frame_thickness(
    corpus_dir: Path, tmp_path: Path
) -> None:
    # Without the top-level SpacingBetweenSlices, a one-frame file's only slice thickness is in the frame's Pixel
    # Measures macro (1.2 mm), which must give the affine's slice depth (not the 1 mm fallback).
    ds = pydicom.dcmread(_enhanced_file(corpus_dir))
    one = _one_frame(ds)
    one.save_as(tmp_path / "one_frame.dcm")
    thickness = float(one.PerFrameFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness)

    scan = medgan.load_scan(tmp_path / "one_frame.dcm")

    assert tuple(scan.shape) == (1, int(ds.Columns), int(ds.Rows))
    assert thickness == 1.2
    assert np.isclose(np.linalg.norm(np.asarray(scan.affine)[:3, 2]), thickness)


def test_frame_without_pixel_spacing_or_position_macros_uses_the_top_level_elements(
    corpus_dir: Path, tmp_path: Path
) -> None:
    # A (hybrid) file whose frame macros lack PixelSpacing and Plane Position while the top level has them: those
    # are the frame's geometry, not "absent" (1 mm pixels at the origin).
    one = _one_frame(pydicom.dcmread(_enhanced_file(corpus_dir)))
    frame = one.PerFrameFunctionalGroupsSequence[0]
    del frame.PixelMeasuresSequence[0].PixelSpacing
    del frame.PlanePositionSequence
    one.PixelSpacing = ["0.9", "0.8"]  # row spacing (between rows), column spacing (between columns)
    one.ImagePositionPatient = ["12.5", "-30.25", "41"]
    one.save_as(tmp_path / "top_level.dcm")

    affine = np.asarray(medgan.load_scan(tmp_path / "top_level.dcm").affine)

    # first array axis runs along a row (columns apart), the second down a column (rows apart); LPS -> RAS
    assert np.allclose(np.linalg.norm(affine[:3, :2], axis=0), [0.8, 0.9])
    assert np.allclose(affine[:3, 3], [-12.5, 30.25, 41.0])

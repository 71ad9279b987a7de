"""Silent wrong uses of the CLI found by the UX review (2026-12, round 30): each now logs one WARNING.

* ``medgan labels`` with a T1 given as ``--gm``: every map is in range, but p_gm + p_wm far exceeds 1;
* ``medgan upscale`` with the through-plane model on an isotropic scan, or an isotropic model on a thick-slice one;
* ``medgan degrade --factor 1``: an unchanged copy.

All on the real MNI ICBM152 sample maps and T1 (crops, world geometry kept or set to the voxel sizes tested).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA

from pipelines import cli

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
#: 64 x 64 x 3 voxels around the ventricles (as tests/test_cli_labels.py): grey and white matter both occur
BOX = (slice(40, 104), slice(60, 124), slice(78, 81))
SR_LOGGER = "medgan.infer.superres"


def _crop(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.load(MNI / f"{name}.nii.gz").slicer[BOX], path)
    return path


def _warnings(caplog, logger: str, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def test_labels_with_a_t1_as_gm_warns_naming_the_file(tmp_path, caplog):
    t1, wm = _crop(tmp_path, "t1"), _crop(tmp_path, "wm")
    with caplog.at_level(logging.WARNING, logger="medgan.data.labels"):
        code = cli.main(["labels", "--gm", str(t1), "--wm", str(wm), str(tmp_path / "lab.nii.gz")])
    assert code == 0
    (msg,) = _warnings(caplog, "medgan.data.labels", "p_gm + p_wm exceeds 1")
    assert str(t1) in msg and str(wm) in msg and "sum <= 1" in msg


def test_labels_with_the_real_gm_and_wm_maps_does_not_warn(tmp_path, caplog):
    gm, wm = _crop(tmp_path, "gm"), _crop(tmp_path, "wm")
    with caplog.at_level(logging.WARNING, logger="medgan.data.labels"):
        assert cli.main(["labels", "--gm", str(gm), "--wm", str(wm), str(tmp_path / "lab.nii.gz")]) == 0
    assert not _warnings(caplog, "medgan.data.labels", "p_gm + p_wm")


def _t1_crop(spacing: tuple[float, float, float], shape: tuple[int, int, int]):
    """A crop of the real MNI T1 (float, 0..1) given the voxel sizes ``spacing`` (no degradation record)."""
    from medgan.io.scan import make_scan

    data = np.asarray(nib.load(MNI / "t1.nii.gz").dataobj, dtype=np.float32) / 255.0
    c = [n // 2 for n in data.shape]
    crop = data[tuple(slice(ci - s // 2, ci - s // 2 + s) for ci, s in zip(c, shape, strict=True))]
    return make_scan(crop[None], np.diag([*spacing, 1.0]), {"modality": "MR"})


@pytest.fixture(scope="module")
def through_plane():
    from medgan import SuperResolver

    return SuperResolver.from_pretrained("brain-mr-through-plane-x4", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def iso_2d():
    from medgan import SuperResolver

    return SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32")


def _sr_warnings(sr, scan, caplog) -> list[str]:
    """The warnings ``sr.upscale(scan)`` logs."""
    with caplog.at_level(logging.WARNING, logger=SR_LOGGER):
        sr.upscale(scan)
    return [r.getMessage() for r in caplog.records if r.name == SR_LOGGER and r.levelno == logging.WARNING]


def test_through_plane_model_on_an_isotropic_2mm_scan_warns_once(through_plane, caplog):
    scan = _t1_crop((2.0, 2.0, 2.0), (32, 32, 12))
    (msg,) = _sr_warnings(through_plane, scan, caplog)
    assert "through-plane model" in msg and "0.5 mm apart" in msg


def test_through_plane_model_on_a_thick_slice_scan_does_not_warn(through_plane, caplog):
    scan = _t1_crop((1.0, 1.0, 4.0), (32, 32, 12))
    assert not _sr_warnings(through_plane, scan, caplog)


def test_isotropic_model_on_a_thick_slice_scan_suggests_the_through_plane_model(iso_2d, caplog):
    scan = _t1_crop((1.0, 1.0, 4.0), (32, 32, 4))
    (msg,) = _sr_warnings(iso_2d, scan, caplog)
    assert "thick-slice" in msg and "brain-mr-through-plane-x4" in msg


def test_isotropic_model_on_an_isotropic_scan_does_not_warn(iso_2d, caplog):
    scan = _t1_crop((1.0, 1.0, 1.0), (32, 32, 4))
    assert not _sr_warnings(iso_2d, scan, caplog)


@pytest.mark.parametrize(("factor", "warns"), [("1", True), ("1,1,1", True), ("1,1,2", False)])
def test_degrade_factor_one_on_every_axis_warns(tmp_path, caplog, factor, warns):
    t1 = _crop(tmp_path, "t1")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["degrade", str(t1), str(tmp_path / "lr.nii.gz"), "--factor", factor]) == 0
    found = [r.getMessage() for r in caplog.records if "1 on every axis" in r.getMessage()]
    assert len(found) == (1 if warns else 0)


def test_label_map_messages_give_the_cli_way():
    import torch

    from medgan.data.labels import one_hot
    from medgan.errors import MedganError
    from medgan.io.scan import refuse_label_map

    t1 = np.asarray(nib.load(MNI / "t1.nii.gz").slicer[BOX].dataobj, dtype=np.float32)
    with pytest.raises(MedganError, match=r"CLI: medgan labels --gm GM --wm WM OUT"):
        one_hot(torch.as_tensor(t1[None]), [0, 1, 2, 3])
    with pytest.raises(MedganError, match="the command line cannot"):
        refuse_label_map({"modality": "SEG", "filename_or_obj": "lab.nii.gz"}, "super-resolution")

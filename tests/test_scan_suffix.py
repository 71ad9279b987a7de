"""One list of scan file suffixes (:func:`medgan.io.nifti.split_scan_suffix`) behind discovery's ids, evaluation's
pairing keys (``medgan evaluate`` and ``medgan batch evaluate``), output and sidecar names.

Pairing used to strip ``.nii.gz`` / ``.nii`` / ``.dcm`` while discovery also stripped ``.ima`` (Siemens' DICOM
suffix, often upper case): a ``x.ima`` prediction was keyed ``x.ima`` and paired with no ``x.nii.gz`` reference.
Real data only: ``sample_data/`` DICOM files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import pytest

import medgan
from medgan.eval.compare import pair_scans
from medgan.io.nifti import SCAN_SUFFIXES, inspect_nifti, nifti_sidecar_path, split_scan_suffix
from pipelines.batch.plan import plan_evaluate, plan_upscale
from tests.conftest import SAMPLE_DATA

CT_2D = SAMPLE_DATA / "dicom" / "pydicom_ct_small" / "CT_small.dcm"  # one 128x128 CT slice
MR_2D = SAMPLE_DATA / "dicom" / "pydicom_mr_small" / "MR_small.dcm"  # one 64x64 MR slice


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t1.nii.gz", ("t1", ".nii.gz")),
        ("T1.NII.GZ", ("T1", ".NII.GZ")),
        ("t1.nii", ("t1", ".nii")),
        ("slice.dcm", ("slice", ".dcm")),
        ("IM0001.IMA", ("IM0001", ".IMA")),
        ("a/b/x.ima", ("a/b/x", ".ima")),
        ("notes.gz", ("notes.gz", "")),
        ("IM0001", ("IM0001", "")),
    ],
)
def test_split_scan_suffix(name, expected):
    assert split_scan_suffix(name) == expected
    stem, suffix = split_scan_suffix(name)
    assert stem + suffix == name and (suffix == "" or suffix.lower() in SCAN_SUFFIXES)


def test_sidecar_names_strip_only_nifti_suffixes():
    assert nifti_sidecar_path("out/x.nii.gz") == Path("out/x.json")
    assert nifti_sidecar_path("x.NII") == Path("x.json")
    assert nifti_sidecar_path("x.ima.nii") == Path("x.ima.json")
    assert nifti_sidecar_path("x.dcm") == Path("x.dcm.json")  # not a NIfTI file: its name kept whole


def test_batch_outputs_name_their_sidecars(tmp_path):
    nii = tmp_path / "in" / "sub" / "t1.nii.gz"
    nii.parent.mkdir(parents=True)
    shutil.copy(SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz", nii)
    (ref,) = medgan.discover_scans(tmp_path / "in")
    (task,) = plan_upscale([ref], tmp_path / "in", tmp_path / "out")
    assert task.outputs == (f"sub/{ref.id}.nii.gz", f"sub/{ref.id}.json")


def test_nifti_info_spacing_is_the_headers():
    """NiftiInfo.spacing (from the affine) against nibabel's own reading of the header's voxel sizes."""
    path = SAMPLE_DATA / "nifti" / "nibabel" / "example4d.nii.gz"
    info = inspect_nifti(path)
    assert info.spacing == pytest.approx(tuple(float(z) for z in nib.load(path).header.get_zooms()[:3]), abs=1e-5)


@pytest.fixture
def ima_tree(tmp_path) -> tuple[Path, Path]:
    """``pred/``: two Siemens-named DICOM files (``.ima``, ``.IMA``); ``ref/``: NIfTI references of the same names."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    shutil.copy(CT_2D, pred / "CT_small.ima")
    shutil.copy(MR_2D, pred / "MR_small.IMA")
    for source in (CT_2D, MR_2D):
        medgan.save_scan(medgan.load_scan(source), ref / f"{source.stem}.nii.gz")
    return pred, ref


def test_ima_predictions_pair_with_their_references(ima_tree):
    pred, ref = ima_tree
    pairs, notes = pair_scans(pred, ref)
    assert not notes
    assert [(p.key, p.pred.path.name, p.ref.path.name) for p in pairs] == [
        ("CT_small", "CT_small.ima", "CT_small.nii.gz"),
        ("MR_small", "MR_small.IMA", "MR_small.nii.gz"),
    ]


def test_batch_evaluate_pairs_ima_predictions_too(ima_tree):
    pred, ref = ima_tree
    tasks = plan_evaluate(medgan.discover_scans(ref), ref, medgan.discover_scans(pred), pred)
    paired = {Path(t.ref.paths[0]).name: Path(t.others["pred"].paths[0]).name for t in tasks if t.reason is None}
    assert paired == {"CT_small.nii.gz": "CT_small.ima", "MR_small.nii.gz": "MR_small.IMA"}

"""Checks of the committed ``sample_data/`` folder against its MANIFEST.json (fast, no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
MANIFEST_PATH = SAMPLE_DIR / "MANIFEST.json"
MAX_TOTAL_BYTES = 15_000_000


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text())


@pytest.fixture(scope="module")
def rows(manifest: dict) -> list[dict]:
    return manifest["files"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_manifest_file_exists_with_recorded_size_and_sha256(rows: list[dict]) -> None:
    assert rows, "MANIFEST.json lists no files"
    for row in rows:
        path = SAMPLE_DIR / row["path"]
        assert path.is_file(), f"{row['path']} is listed in MANIFEST.json but missing"
        assert path.stat().st_size == row["bytes"], row["path"]
        assert _sha256(path) == row["sha256"], f"{row['path']} differs from MANIFEST.json (rebuild or update)"


def test_no_unlisted_data_files(rows: list[dict]) -> None:
    listed = {row["path"] for row in rows}
    hand_written = {"README.md", "MANIFEST.json", "build_sample_data.py"}
    on_disk = {
        p.relative_to(SAMPLE_DIR).as_posix()
        for p in SAMPLE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert on_disk - hand_written == listed


def test_total_size_within_budget(manifest: dict, rows: list[dict]) -> None:
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total <= MAX_TOTAL_BYTES, f"sample_data/ is {total} bytes"
    assert manifest["total_bytes"] == sum(row["bytes"] for row in rows)


def test_every_nifti_opens_with_recorded_shape(rows: list[dict]) -> None:
    niftis = [r for r in rows if r.get("kind") == "nifti"]
    assert len(niftis) >= 3
    for row in niftis:
        img = nib.load(SAMPLE_DIR / row["path"])
        assert list(img.shape) == row["shape"], row["path"]
        assert np.dtype(img.get_data_dtype()).newbyteorder("=") == np.dtype(row["dtype"]), row["path"]
        assert np.all(np.isfinite(img.affine)) and abs(np.linalg.det(img.affine[:3, :3])) > 0, row["path"]


def test_every_dicom_opens_with_pixels(rows: list[dict]) -> None:
    dicoms = [r for r in rows if r.get("kind") == "dicom"]
    assert len(dicoms) >= 2
    for row in dicoms:
        ds = pydicom.dcmread(SAMPLE_DIR / row["path"])
        assert ds.Modality == row.get("modality", ds.Modality) and ds.Modality in ("CT", "MR"), row["path"]
        pixels = ds.pixel_array
        assert pixels.ndim in (2, 3) and pixels.size > 0 and int(pixels.max()) > int(pixels.min()), row["path"]


def test_dicom_series_folders_hold_one_series_each(rows: list[dict]) -> None:
    folders: dict[str, set[str]] = {}
    for row in rows:
        if row.get("kind") == "dicom":
            ds = pydicom.dcmread(SAMPLE_DIR / row["path"], stop_before_pixels=True)
            folders.setdefault(str(Path(row["path"]).parent), set()).add(ds.SeriesInstanceUID)
    assert any(len(list((SAMPLE_DIR / f).iterdir())) > 1 for f in folders), "no multi-file series"
    for folder, uids in folders.items():
        assert len(uids) == 1, f"{folder} mixes {len(uids)} series"


def test_required_content_present(rows: list[dict]) -> None:
    paths = {r["path"] for r in rows}
    for name in ("t1", "gm", "wm"):
        assert f"nifti/mni_icbm152_2009a_sym/{name}.nii.gz" in paths
    assert "dicom/pydicom_ct_small/CT_small.dcm" in paths
    assert "dicom/pydicom_mr_small/MR_small.dcm" in paths
    enhanced = [r for r in rows if r.get("series") == "dicom/dcm_qa_xa30_t1w_tfl3d"]
    assert len(enhanced) == 1
    ds = pydicom.dcmread(SAMPLE_DIR / enhanced[0]["path"], stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == 96


def test_readme_names_every_file_source_and_licence(rows: list[dict]) -> None:
    readme = (SAMPLE_DIR / "README.md").read_text()
    for row in rows:
        path = row["path"]
        folder = str(Path(path).parent) + "/"
        assert path in readme or folder in readme, f"README.md does not mention {path} or {folder}"
        if row.get("kind") != "license":
            assert row["origin"] in readme, f"README.md does not name the origin of {path}: {row['origin']}"
        assert f"`{row['license']}`" in readme, f"README.md does not name the licence {row['license']}"
    for lic in {r["path"] for r in rows if r.get("kind") == "license"}:
        assert lic in readme, f"README.md does not point to {lic}"


def test_mni_crop_keeps_world_position_and_values(rows: list[dict]) -> None:
    try:
        from importlib.resources import files

        nilearn_data = Path(str(files("nilearn").joinpath("datasets/data")))
    except ModuleNotFoundError:
        pytest.skip("nilearn is not installed (pip install -e .[data]); cannot compare with the original template")
    for name in ("t1", "gm", "wm"):
        row = next(r for r in rows if r["path"] == f"nifti/mni_icbm152_2009a_sym/{name}.nii.gz")
        orig = nib.load(nilearn_data / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
        crop = nib.load(SAMPLE_DIR / row["path"])
        assert crop.get_data_dtype() == np.uint8
        # Map crop voxels to world with the crop's affine, back to original voxels with the original affine.
        ijk = np.array([[0, 0, 0], [10, 50, 70], [s - 1 for s in crop.shape]], dtype=float)
        world = nib.affines.apply_affine(crop.affine, ijk)
        orig_ijk = nib.affines.apply_affine(np.linalg.inv(orig.affine), world)
        np.testing.assert_allclose(orig_ijk, np.round(orig_ijk), atol=1e-9)
        offset = np.round(orig_ijk[0]).astype(int)
        assert list(offset) == row["crop_offset_voxels"]
        np.testing.assert_array_equal(orig_ijk - ijk, np.tile(offset, (3, 1)))
        np.testing.assert_allclose(crop.affine[:3, :3], orig.affine[:3, :3], atol=0)
        # Same voxel values at the same world positions, and nothing non-zero was cut away.
        a_orig = np.asanyarray(orig.dataobj)
        a_crop = np.asanyarray(crop.dataobj)
        hi = offset + np.array(crop.shape)
        np.testing.assert_array_equal(a_crop, a_orig[offset[0] : hi[0], offset[1] : hi[1], offset[2] : hi[2]])
        assert int(a_crop.astype(np.int64).sum()) == int(a_orig.astype(np.int64).sum())


def test_build_script_without_a_source_package_says_which_extra(tmp_path: Path) -> None:
    """``build_sample_data.py --check`` without nilearn (the ``data`` extra, not in ``.[test]``) ended in a 30-line
    ModuleNotFoundError traceback; it is now one line naming the extra, exit 1."""
    import subprocess
    import sys

    (tmp_path / "nilearn.py").write_text("raise ModuleNotFoundError(\"No module named 'nilearn'\", name='nilearn')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    script = SAMPLE_DIR / "build_sample_data.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "build_sample_data: the sources need the nilearn package, which is not installed: pip install -e '.[data]'"
    ]

"""``discover_scans`` over a messy folder built from real corpus files.

The tree mixes two real multi-slice series, a localizer inside one of them, non-image objects
(pydicom's shipped RTSTRUCT and SR), junk, a zero-byte file, broken files, hostile
SeriesDescriptions, a NIfTI pair, a symlink loop and the corpus' negative cases.
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA
from pydicom.uid import generate_uid

import medgan
from medgan.io.discover import ScanRef, discover_scans
from tests.conftest import permissions_apply, require_shared

HOSTILE = {
    "../../x": "dotdot",
    "a/b\\c": "seps",
    "Ünïcødé 脳 MRI\tT1\x00": "unicode",
    "...": "dots",
    "x" * 300: "long",
}
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _copy_as_new_series(src: Path, dst: Path, description: str, seed: str) -> None:
    ds = pydicom.dcmread(src)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "sop"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 300-character description is over LO's 64 on purpose
        ds.SeriesDescription = description
        ds.save_as(dst)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    corpus = require_shared()
    root = tmp_path_factory.mktemp("messy")
    study = root / "study"
    shutil.copytree(corpus / "dicom2nifti_siemens_anatomical_001" / "input", study / "sag_t1")
    shutil.copytree(corpus / "dicom2nifti_hitachi_anatomical_001" / "input", study / "hitachi")
    # a localizer inside the hitachi series (same SeriesInstanceUID, ImageType LOCALIZER)
    ds = pydicom.dcmread(study / "hitachi" / "001.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["localizer"])
    ds.save_as(study / "hitachi" / "scout.dcm")
    # non-image objects shipped with pydicom
    from pydicom.data import get_testdata_file

    other = root / "other"
    other.mkdir()
    for name in ("rtstruct.dcm", "test-SR.dcm"):
        path = get_testdata_file(name, download=False)
        if path is not None:
            shutil.copy(path, other / name)
    # junk: skipped silently
    (root / "README.txt").write_text("scans from the scanner\n")
    (study / "sag_t1" / "sidecar.json").write_text('{"EchoTime": 0.01}')
    (root / "notes.md").write_text("# notes\n")
    (root / "blob.bin").write_bytes(b"\x00\x01binary junk" * 100)
    (root / ".DS_Store").write_bytes(b"\x00" * 64)
    # files that look like DICOM but are broken: listed as unusable
    (other / "empty.dcm").write_bytes(b"")
    (other / "garbage.dcm").write_bytes(b"not dicom at all " * 50)
    src = study / "sag_t1" / "IM-0001-0112-0001.dcm"
    (other / "IM9999").write_bytes(src.read_bytes()[:600])  # truncated header, no suffix
    # hostile descriptions, one single-image series each
    hostile = root / "hostile"
    hostile.mkdir()
    for description, name in HOSTILE.items():
        _copy_as_new_series(src, hostile / f"{name}.dcm", description, name)
    # NIfTI: a real one and a broken one
    nifti = root / "nifti"
    nifti.mkdir()
    shutil.copy(Path(NIBABEL_DATA) / "example4d.nii.gz", nifti / "example4d.nii.gz")
    (nifti / "broken.nii.gz").write_bytes((Path(NIBABEL_DATA) / "example4d.nii.gz").read_bytes()[:100])
    # negative corpus cases
    shutil.copytree(corpus / "negative", root / "negative")
    # a symlink loop back to the root
    try:
        (root / "study" / "loop").symlink_to(root, target_is_directory=True)
    except OSError:
        pass
    return root


@pytest.fixture(scope="module")
def refs(messy) -> list[ScanRef]:
    return discover_scans(messy)


def _by_path(refs: list[ScanRef], fragment: str) -> list[ScanRef]:
    return [r for r in refs if any(fragment in p.as_posix() for p in r.paths)]


def test_real_series_are_found_with_geometry(refs):
    (sag,) = _by_path(refs, "study/sag_t1")
    assert sag.kind == "dicom-series" and sag.usable and sag.reason is None
    assert sag.shape == (1, 256, 256, 4)
    assert len(sag.paths) == 4 and all(p.suffix == ".dcm" for p in sag.paths)
    assert sag.modality == "MR"
    assert len(sag.spacing) == 3 and all(v > 0 for v in sag.spacing)
    assert sag.orientation is not None and len(sag.orientation) == 3
    assert sag.series_uid


def test_localizer_is_split_out(refs):
    hitachi = _by_path(refs, "study/hitachi")
    assert len(hitachi) == 2
    (scout,) = [r for r in hitachi if not r.usable]
    (series,) = [r for r in hitachi if r.usable]
    assert scout.reason == "localizer (scout)"
    assert [p.name for p in scout.paths] == ["scout.dcm"]
    assert len(series.paths) == 4 and series.shape[-1] == 4
    assert scout.series_uid == series.series_uid
    assert "localizer" in series.note


def test_non_image_objects_are_unusable(refs):
    rt = _by_path(refs, "other/rtstruct.dcm")
    sr = _by_path(refs, "other/test-SR.dcm")
    if not rt or not sr:
        pytest.skip("pydicom's test files rtstruct.dcm / test-SR.dcm are not installed")
    assert not rt[0].usable and "RT structure set" in rt[0].reason and rt[0].modality == "RTSTRUCT"
    assert not sr[0].usable and "structured report" in sr[0].reason


def test_broken_files_are_listed_junk_is_skipped(refs):
    listed = {p.name for r in refs for p in r.paths}
    assert not listed & {"README.txt", "sidecar.json", "notes.md", "blob.bin", ".DS_Store"}
    (empty,) = _by_path(refs, "other/empty.dcm")
    assert empty.kind == "dicom-file" and not empty.usable and "empty file" in empty.reason
    (garbage,) = _by_path(refs, "other/garbage.dcm")
    assert not garbage.usable and "not a DICOM file" in garbage.reason
    (trunc,) = _by_path(refs, "other/IM9999")
    assert not trunc.usable and trunc.kind == "dicom-file"
    (broken,) = _by_path(refs, "nifti/broken.nii.gz")
    assert broken.kind == "nifti" and not broken.usable and "gzip" in broken.reason


def test_nifti_is_a_scan(refs):
    (ref,) = _by_path(refs, "nifti/example4d.nii.gz")
    img = nib.load(ref.paths[0])
    assert ref.kind == "nifti" and ref.usable and ref.modality == "unknown"
    assert ref.shape == (2, 128, 96, 24)
    np.testing.assert_allclose(ref.spacing, img.header.get_zooms()[:3], rtol=1e-6)
    assert ref.orientation == "".join(nib.aff2axcodes(img.affine))


def test_negative_corpus_cases_are_flagged(refs):
    def reasons(case: str) -> list[str]:
        found = _by_path(refs, f"negative/{case}/")
        assert found, case
        return [r.reason or "" for r in found if not r.usable]

    assert any("gantry tilt" in r for r in reasons("dicom2nifti_gantry_tilt"))
    assert any("gap" in r for r in reasons("dicom2nifti_missing_slice"))
    assert any("gantry tilt" in r and "gap" in r for r in reasons("dicom2nifti_missing_slice_tilted"))
    assert any("duplicate positions" in r for r in reasons("dicom2nifti_not_a_volume"))
    # one SeriesInstanceUID, two orientations: never one volume; split and reported
    mixed = _by_path(refs, "negative/dicom2nifti_mixed_orientation/")
    assert len(mixed) == 2
    assert len({r.series_uid for r in mixed}) == 1
    assert all(len(r.paths) == 2 for r in mixed)
    assert all(r.usable and "orientation" in r.note for r in mixed)
    assert len({r.orientation for r in mixed}) == 2


def test_ids_are_safe_unique_and_stable(messy, refs):
    ids = [r.id for r in refs]
    assert len(ids) == len(set(ids))
    for ref_id in ids:
        assert ID_RE.match(ref_id), ref_id
        assert len(ref_id) <= 64 and ".." not in ref_id and not ref_id.startswith(".")
    again = discover_scans(messy)
    assert [r.id for r in again] == ids
    hostile = _by_path(refs, "/hostile/")
    assert len(hostile) == len(HOSTILE)
    for ref in hostile:
        assert ref.usable and ref.shape == (1, 256, 256) and ref.kind == "dicom-file"
        assert "/" not in ref.description and "\\" not in ref.description
        assert ref.description.isprintable() and len(ref.description) <= 64
        # the id works as a file name
        assert Path(ref.id).name == ref.id
    (unicode_ref,) = [r for r in hostile if r.paths[0].name == "unicode.dcm"]
    assert "脳" in unicode_ref.description and unicode_ref.id.startswith("Unic")
    (dots,) = [r for r in hostile if r.paths[0].name == "dots.dcm"]
    assert dots.description == "..." and dots.id.startswith("dots-")  # nothing usable left: the file stem


def test_a_series_id_does_not_depend_on_the_walk_root(messy, refs):
    (sag,) = _by_path(refs, "study/sag_t1")
    (alone,) = discover_scans(messy / "study" / "sag_t1")
    assert alone.id == sag.id and alone.paths == sag.paths


def test_symlink_loop_is_not_followed_twice(refs):
    paths = [p for r in refs for p in r.paths]
    assert not any("/loop/" in p.as_posix() for p in paths)
    assert len(paths) == len(set(paths))


def test_single_file_and_missing_root(messy):
    (ref,) = discover_scans(messy / "study" / "sag_t1" / "IM-0001-0112-0001.dcm")
    assert ref.usable and ref.shape == (1, 256, 256)
    (junk,) = discover_scans(messy / "README.txt")
    assert not junk.usable
    with pytest.raises(medgan.errors.ScanReadError, match="no such file or folder"):
        discover_scans(messy / "nope")


def test_to_dict_is_json_ready(refs):
    import json

    text = json.dumps([r.to_dict() for r in refs])
    assert json.loads(text)[0]["id"] == refs[0].id


def test_discovery_and_info_do_not_import_torch_or_monai():
    """Header-only work (`medgan info`) must not pay seconds for torch / MONAI."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    code = "import medgan.io.discover, sys; assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
    # the whole `medgan info` path, on real DICOM series and NIfTI files, reads headers only
    info = (
        "import sys; from pipelines.cli import main; rc = main(['info', 'sample_data']); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules and 'monai' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", info], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dicom-series" in done.stdout and "nifti" in done.stdout


def test_orientation_code_of_degenerate_affine_is_none():
    from medgan.io.scan import orientation_code

    img = nib.load(Path(NIBABEL_DATA) / "example4d.nii.gz")
    assert orientation_code(img.affine) == "".join(nib.aff2axcodes(img.affine))
    assert orientation_code(np.diag([-1.0, 1.0, 2.0, 1.0])) == "LAS"
    assert orientation_code(np.diag([1.0, 1.0, 0.0, 1.0])) is None  # a zero column: no letter for that axis
    assert orientation_code(np.full((4, 4), np.nan)) is None


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def test_orientation_code_fast_path_equals_nibabel():
    """The nibabel-free path for orthogonal affines gives nibabel's code, and defers to nibabel when unsure."""
    from medgan.io import scan as scan_module
    from medgan.io.dicom_read import plan_dicom_series, read_dicom_header

    rng = np.random.default_rng(7)
    images = [nib.load(p) for p in sorted(Path(NIBABEL_DATA).glob("*.nii*"))]
    affines = [img.affine for img in images if getattr(img, "affine", None) is not None]
    for ref in discover_scans(require_shared()):
        if ref.usable and ref.kind != "nifti":  # the planned geometry, without decoding the pixels
            headers = [read_dicom_header(p) for p in ref.paths]
            affines.append(plan_dicom_series(headers, source=ref.paths[0].parent).affine)
    for _ in range(3000):
        affine = np.eye(4)
        rot = _rotation(rng)
        if rng.random() < 0.5:  # mostly axis-aligned with a small oblique tilt, like real scans
            rot = np.eye(3)[rng.permutation(3)] * rng.choice([-1.0, 1.0], size=3)
            rot = _rotation_about(rng.normal(size=3), rng.normal(scale=0.3)) @ rot
        affine[:3, :3] = rot * rng.uniform(0.2, 5.0, size=3)
        if rng.random() < 0.1:
            affine[:3, 2] += rng.normal(scale=1e-3, size=3)  # slight shear: the general path
        affines.append(affine)
    fast = 0
    for affine in affines:
        expected = "".join(c or "?" for c in nib.aff2axcodes(affine))
        expected = None if "?" in expected else expected
        assert scan_module.orientation_code(affine) == expected, affine
        fast += scan_module._orthogonal_code(affine) is not None
    assert fast > len(affines) // 2  # most real-like affines take the fast path
    # near-45-degree obliques and sheared matrices are left to nibabel
    assert scan_module._orthogonal_code(_homogeneous(_rotation_about([0, 0, 1], 0.78))) is None
    sheared = np.eye(4)
    sheared[0, 1] = 0.1
    assert scan_module._orthogonal_code(sheared) is None


def _rotation_about(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _homogeneous(rot: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    return out


SAMPLE_SERIES = Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def test_a_series_with_an_unreadable_slice_is_not_usable(tmp_path):
    """One truncated file of a series used to become a lone unusable file while the rest loaded as a thinner volume
    without a word; now the series says which file is missing, and load_scan refuses it."""
    series = tmp_path / "series"
    shutil.copytree(SAMPLE_SERIES, series)
    last = sorted(series.iterdir())[-1]
    raw = last.read_bytes()
    cut = raw.index(b"\xe0\x7f\x10\x00") - 6  # inside the element before the pixel data, after the series UID
    last.write_bytes(raw[:cut])
    refs = discover_scans(series)
    whole = [r for r in refs if r.kind == "dicom-series"]
    assert len(whole) == 1 and not whole[0].usable
    assert "cannot be read" in whole[0].reason and last.name in whole[0].reason
    with pytest.raises(medgan.errors.ScanReadError, match="cannot be read"):
        medgan.load_scan(series)


def test_a_zero_filled_file_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    """A preallocated (zero-filled) file has no DICM marker; a forced parse read it as millions of empty elements
    (minutes for a few hundred MB). It is refused before any parse."""
    import medgan.io.dicom_read as R

    path = tmp_path / "prealloc.dcm"
    with open(path, "wb") as fh:
        fh.truncate(8 << 20)
    forced = []
    real = pydicom.dcmread
    monkeypatch.setattr(R.pydicom, "dcmread", lambda *a, **k: (k.get("force") and forced.append(a)) or real(*a, **k))
    (ref,) = discover_scans(path)
    assert not ref.usable and "not a DICOM file" in ref.reason and not forced


def test_multi_valued_description_and_series_id_of_a_file(tmp_path):
    """A SeriesDescription with several values reads as text, and load_scan(file, series=) takes the id that
    discovering the file's folder gives its series, as the contract says (only the UID worked)."""
    from medgan.io.discover import sanitize_description

    assert sanitize_description(["T1", "T2"]) == "T1 T2"
    (ref,) = [r for r in discover_scans(SAMPLE_SERIES) if r.usable]
    one = ref.paths[0]
    assert medgan.load_scan(one, series=ref.id).shape[1:3] == medgan.load_scan(one).shape[1:3]
    with pytest.raises(medgan.errors.ScanReadError, match="does not belong"):
        medgan.load_scan(one, series="no-such-series")
    nifti = medgan.save_scan(medgan.load_scan(SAMPLE_SERIES), tmp_path / "x.nii.gz")
    with pytest.raises(medgan.errors.ScanReadError, match="NIfTI file holds one scan"):
        medgan.load_scan(nifti, series="nonsense")


def _make_dirs(fd: int, names: list[str]) -> int:
    """Create nested folders below the folder open as ``fd``, by descriptor (a path beyond PATH_MAX cannot be
    created by name); return a descriptor of the deepest one (``fd`` is closed)."""
    import os

    for name in names:
        os.mkdir(name, dir_fd=fd)
        deeper = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def test_a_folder_or_file_beyond_the_path_limit_is_an_unusable_ref_not_silence(tmp_path, caplog):
    """A path longer than the system allows (PATH_MAX, 4096 bytes on Linux) cannot be stat'ed: the walk skipped such
    a folder or file without a word, so `medgan info` said "no scan found" of a tree that holds one. A warning alone
    still let a batch over the tree finish "all done"; each is now an unusable ScanRef (a folder of kind "folder")."""
    import errno
    import os

    name = "level_" + "x" * 194
    levels = (4090 - len(str(tmp_path))) // (len(name) + 1)  # the last folder's path: 3890 to 4090 bytes
    fd = _make_dirs(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), [name] * levels)
    file_fd = os.open("y" * 246 + ".dcm", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)  # its path: > 4096 bytes
    os.write(file_fd, (SAMPLE_SERIES / "001.dcm").read_bytes())
    os.close(file_fd)
    os.close(_make_dirs(fd, ["z" * 250]))  # a folder past the limit, too
    with caplog.at_level(logging.WARNING, logger="medgan.io.discover"):
        refs = discover_scans(tmp_path)
    too_long = os.strerror(errno.ENAMETOOLONG)
    assert sorted(r.kind for r in refs) == ["dicom-file", "folder"]
    assert all(not r.usable and too_long in r.reason and ID_RE.match(r.id) for r in refs)
    (folder,) = [r for r in refs if r.kind == "folder"]
    assert folder.paths[0].name == "z" * 250 and "were not seen" in folder.reason
    assert folder.to_dict()["n_files"] == 0  # none of its files was seen (not the folder counted as one)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and too_long in r.getMessage()]
    assert len(warned) == 2, caplog.text
    assert any(m.startswith("cannot read folder ") for m in warned)
    assert any(".dcm (" in m and not m.startswith("cannot read folder") for m in warned)


def test_a_series_next_to_a_file_that_cannot_be_opened_is_not_usable(tmp_path):
    """A slice without read permission (a file another user copied in with umask 077) was listed as "DICOM header is
    truncated or corrupt (PermissionError)" while its series, which cannot be told from the unreadable file, loaded
    one slice short without a word. Now the file says it cannot be opened and the series in its folder is refused."""
    import errno
    import json
    import os
    import subprocess
    import sys

    series = tmp_path / "series"
    shutil.copytree(SAMPLE_SERIES, series)
    last = sorted(series.iterdir())[-1]  # an end slice: no gap shows where it is missing
    last.chmod(0)
    try:
        prefix = permissions_apply(last)
        code = (
            "import json, sys, medgan\n"
            "refs = [r.to_dict() for r in medgan.discover_scans(sys.argv[1])]\n"
            "try:\n    medgan.load_scan(sys.argv[1]); error = None\n"
            "except medgan.errors.ScanReadError as exc:\n    error = str(exc)\n"
            "try:\n    medgan.load_scan(sys.argv[2]); file_error = None\n"
            "except medgan.errors.ScanReadError as exc:\n    file_error = str(exc)\n"
            "print(json.dumps({'refs': refs, 'error': error, 'file_error': file_error}))\n"
        )
        repo = Path(__file__).resolve().parents[1]
        done = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(series), str(last)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        last.chmod(0o644)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (lone,) = [r for r in out["refs"] if r["paths"] == [str(last)]]
    assert not lone["usable"] and lone["reason"] == f"cannot be opened ({os.strerror(errno.EACCES)})"
    (whole,) = [r for r in out["refs"] if r["kind"] == "dicom-series"]
    assert len(whole["paths"]) == 3 and not whole["usable"]
    assert "cannot be opened" in whole["reason"] and last.name in whole["reason"]
    assert out["error"] is not None and "cannot be opened" in out["error"]
    # the file itself, loaded directly: not "truncated or corrupt (PermissionError)"
    assert out["file_error"] == f"{last}: cannot be opened ({os.strerror(errno.EACCES)})"


def test_load_scan_of_an_analyze_header_gives_discoverys_reason(tmp_path):
    """load_scan on the .hdr of an Analyze pair went to the DICOM reader ("not a DICOM file"); it now gives the reason
    discovery gives (convert the pair to a single .nii)."""
    anat = nib.load(Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "nibabel" / "anatomical.nii")
    nib.save(nib.AnalyzeImage(np.asarray(anat.dataobj), anat.affine), tmp_path / "t1.img")
    (ref,) = discover_scans(tmp_path)
    assert not ref.usable and "Analyze" in ref.reason
    with pytest.raises(medgan.errors.ScanReadError, match=r"t1\.hdr: .*Analyze / NIfTI \.hdr/\.img pair"):
        medgan.load_scan(tmp_path / "t1.hdr")
    # its voxel half too, which went to the DICOM reader ("not a DICOM file")
    with pytest.raises(medgan.errors.ScanReadError, match=r"t1\.img: the voxel data of an Analyze .*single \.nii"):
        medgan.load_scan(tmp_path / "t1.img")


def test_a_copy_of_a_series_in_another_folder_leaves_the_original_usable(tmp_path):
    """A backup copy of a series repeats its SOPInstanceUIDs; the two together looked like a series with every slice
    twice, and neither was usable. Now the folder holding the whole series is the scan and the copies (whole or
    partial) are unusable refs that name it, so a batch processes the scan once."""
    src = require_shared() / "dicom2nifti_hitachi_anatomical_001" / "input"
    files = sorted(p for p in src.iterdir() if p.is_file())
    shutil.copytree(src, tmp_path / "study" / "t1")
    shutil.copytree(src, tmp_path / "aaa_backup" / "old" / "t1")  # walked first, but deeper: not the one used
    (tmp_path / "partial").mkdir()
    for f in files[:2]:
        shutil.copy(f, tmp_path / "partial" / f.name)
    refs = discover_scans(tmp_path)
    (used,) = [r for r in refs if r.usable]
    assert used.paths == tuple(sorted((tmp_path / "study" / "t1" / f.name for f in files), key=str))
    assert used.shape is not None and used.shape[-1] == len(files)
    copies = {r.paths[0].parent.relative_to(tmp_path).as_posix(): r for r in refs if not r.usable}
    assert set(copies) == {"aaa_backup/old/t1", "partial"}
    assert copies["aaa_backup/old/t1"].reason.startswith("a copy of the series in study/t1")
    assert copies["partial"].reason.startswith(f"a partial copy (2 of {len(files)} files) of the series in study/t1")
    assert all(used.id in r.reason for r in copies.values())
    assert len({r.id for r in refs}) == 3 and all(ID_RE.match(r.id) for r in refs)
    # loading the whole tree picks the series, not an ambiguity between copies
    assert medgan.load_scan(tmp_path).shape == used.shape

    # a repeat inside one folder, or copies where no folder is whole, is still refused with the hint
    shutil.rmtree(tmp_path / "aaa_backup")
    shutil.rmtree(tmp_path / "partial")
    shutil.copy(files[0], tmp_path / "study" / "t1" / "again.dcm")
    (ref,) = discover_scans(tmp_path)
    assert not ref.usable and "repeat the SOPInstanceUID" in ref.reason

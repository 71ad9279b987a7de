#!/usr/bin/env python
"""Rebuild every data file under ``sample_data/`` from installed packages and the shared DICOM corpus.

Run from anywhere::

    python sample_data/build_sample_data.py [--corpus PATH] [--check]

Nothing is downloaded: every source is a file shipped inside an installed wheel (nilearn, pydicom, nibabel) or in
the shared corpus (``../shared/corpora`` relative to the repository root by default). The output is deterministic:
DICOM and NIfTI files that are copied keep their bytes, the cropped MNI maps are written with nibabel and gzipped
with ``mtime=0`` and no file name, and ``MANIFEST.json`` is written with sorted keys. ``--check`` rebuilds into a
temporary folder and compares sha256 sums with the committed ``MANIFEST.json`` instead of writing.

``README.md`` and this script are hand-written and never touched by the build.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parents[1] / "shared" / "corpora"
MANAGED_DIRS = ("nifti", "dicom", "LICENSES")  # folders whose content the build owns (stale files are removed)
MNI_MARGIN = 4  # voxels kept around the union of the non-zero T1/GM/WM bounding boxes
MAX_TOTAL_BYTES = 15_000_000

# Licence notice of the MNI ICBM152 2009 templates, as published by the McConnell Brain Imaging Centre
# (http://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/). Not shipped as a file by nilearn, so kept here.
MNI_NOTICE = """\
MNI ICBM152 non-linear 2009 templates (mni_icbm152_nlin_sym_09a)
Source: http://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/
(the files in sample_data/nifti/mni_icbm152_2009a_sym/ are cropped copies of the uint8 versions
shipped in the nilearn wheel as nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz)

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References:
  VS Fonov, AC Evans, RC McKinstry, CR Almli, DL Collins. Unbiased nonlinear average age-appropriate
  brain templates from birth to adulthood. NeuroImage 47, Supplement 1, S102 (2009).
  VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins. Unbiased average
  age-appropriate atlases for pediatric studies. NeuroImage 54(1), 313-327 (2011).
  DL Collins, AP Zijdenbos, WFC Baare, AC Evans. ANIMAL+INSECT: Improved Cortical Structure
  Segmentation. IPMI 1999, LNCS 1613, 210-223.
"""


class BuildError(RuntimeError):
    """A source file is missing or does not look as expected."""


@dataclass
class Entry:
    """One output file of the build."""

    path: str  # relative to sample_data/
    source: str  # where it comes from (package or corpus + path inside it)
    license: str  # short licence id; the full text is in LICENSES/
    write: Callable[[Path], None]  # writes the file to the given path
    origin: str = ""  # version-free origin (package-relative path or corpus case), quoted in README.md
    extra: dict = field(default_factory=dict)  # shape/dtype/modality... recorded in the manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copier(src: Path) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        _atomic_write_bytes(dest, src.read_bytes())

    return write


def _text_writer(text: str) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        _atomic_write_bytes(dest, text.encode("utf-8"))

    return write


def _package_file(package: str, relpath: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise BuildError(
            f"the sources need the {package} package, which is not installed: pip install -e '.[data]'"
        ) from None
    path = Path(str(root.joinpath(relpath)))
    if not path.is_file():
        raise BuildError(f"{package} does not ship {relpath} (looked at {path})")
    return path


def _dist_license(dist: str, name: str) -> Path:
    files = importlib.metadata.distribution(dist).files or []
    for f in files:
        if f.name == name and "dist-info" in str(f):
            return Path(str(f.locate()))
    raise BuildError(f"licence file {name} not found in the {dist} distribution")


def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


# --------------------------------------------------------------------------------------------------------------
# 1. MNI ICBM152 2009a (symmetric) T1 / GM / WM, cropped to the head bounding box at 1 mm
# --------------------------------------------------------------------------------------------------------------
MNI_MAPS = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MNI_DESCRIPTIONS = {
    "t1": "MNI ICBM152 2009a sym T1w (skull-stripped, uint8), cropped",
    "gm": "MNI ICBM152 2009a sym GM probability x255, cropped",
    "wm": "MNI ICBM152 2009a sym WM probability x255, cropped",
}


def _mni_entries() -> list[Entry]:
    sources = {k: _package_file("nilearn", f"datasets/data/{v}") for k, v in MNI_MAPS.items()}
    imgs = {k: nib.load(p) for k, p in sources.items()}
    arrays = {k: np.asanyarray(img.dataobj) for k, img in imgs.items()}
    ref = imgs["t1"]
    for k, img in imgs.items():
        if img.shape != ref.shape or not np.array_equal(img.affine, ref.affine):
            raise BuildError(f"nilearn {MNI_MAPS[k]} is not on the same grid as the T1 template")
    mask = np.zeros(ref.shape, dtype=bool)
    for a in arrays.values():
        mask |= a > 0
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(axis=0) - MNI_MARGIN, 0)
    hi = np.minimum(nz.max(axis=0) + 1 + MNI_MARGIN, ref.shape)
    # New origin: the world position of the first kept voxel, so every voxel keeps its world coordinate.
    affine = ref.affine.copy()
    affine[:3, 3] = ref.affine[:3, :3] @ lo + ref.affine[:3, 3]

    entries = []
    for k, a in arrays.items():
        crop = np.ascontiguousarray(a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        if crop.dtype != np.uint8:  # the nilearn maps are uint8 already; keep the smallest exact type
            raise BuildError(f"nilearn {MNI_MAPS[k]} is {crop.dtype}, expected uint8")
        rel = f"nifti/mni_icbm152_2009a_sym/{k}.nii.gz"

        def write(dest: Path, crop: np.ndarray = crop, k: str = k) -> None:
            img = nib.Nifti1Image(crop, affine)
            img.header.set_data_dtype(np.uint8)
            img.header.set_xyzt_units("mm", "sec")
            img.header["descrip"] = MNI_DESCRIPTIONS[k].encode()
            img.set_qform(affine, code=4)  # 4 = MNI_152
            img.set_sform(affine, code=4)
            raw = img.to_bytes()
            _atomic_write_bytes(dest, gzip.compress(raw, compresslevel=9, mtime=0))

        entries.append(
            Entry(
                rel,
                f"nilearn {_version('nilearn')} wheel: nilearn/datasets/data/{MNI_MAPS[k]}",
                "MNI-ICBM152",
                write,
                f"nilearn/datasets/data/{MNI_MAPS[k]}",
                {
                    "kind": "nifti",
                    "shape": list(crop.shape),
                    "dtype": "uint8",
                    "crop_offset_voxels": [int(v) for v in lo],
                    "original_shape": list(ref.shape),
                    "origin_dataset": "MNI ICBM152 non-linear symmetric 2009a (Fonov et al. 2009/2011)",
                },
            )
        )
    return entries


# --------------------------------------------------------------------------------------------------------------
# 2. pydicom's real CT and MR test images
# --------------------------------------------------------------------------------------------------------------
PYDICOM_FILES = {
    "CT_small.dcm": ("dicom/pydicom_ct_small", "NEMA WG04 CT1_UNC downsized to 128x128 by pydicom"),
    "MR_small.dcm": ("dicom/pydicom_mr_small", "NEMA WG04 MR1_UNC downsized to 64x64 by pydicom"),
}


def _pydicom_entries() -> list[Entry]:
    entries = []
    for name, (folder, origin) in PYDICOM_FILES.items():
        found = get_testdata_file(name, download=False)  # local only; never fetches
        if found is None or not Path(str(found)).is_file():
            raise BuildError(f"pydicom does not ship {name} locally")
        src = Path(str(found))
        entries.append(
            Entry(
                f"{folder}/{name}",
                f"pydicom {_version('pydicom')} wheel: pydicom/data/test_files/{name}",
                "MIT",
                _copier(src),
                f"pydicom/data/test_files/{name}",
                {"kind": "dicom", "origin_dataset": origin},
            )
        )
    return entries


# --------------------------------------------------------------------------------------------------------------
# 3. Real DICOM series from the shared corpus (files copied byte for byte, original names)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class CorpusSeries:
    case: str  # corpus case name
    out: str  # output folder under sample_data/
    files: slice | None = None  # subset of the sorted input files (None: all)


CORPUS_SERIES = [
    CorpusSeries("dcm_qa_xa30_t1w_tfl3d", "dicom/dcm_qa_xa30_t1w_tfl3d"),
    CorpusSeries("dcm_qa_orient_axasc36", "dicom/dcm_qa_orient_axasc36"),
    CorpusSeries("dicom2nifti_hitachi_anatomical_001", "dicom/dicom2nifti_hitachi_anatomical_001"),
    # First temporal volume (instances 1-15) of the 150-file GE fMRI series: a real folder of single-slice files.
    CorpusSeries("dcm_qa_nih_ge_epi_interleaved_i_to_s", "dicom/dcm_qa_nih_ge_epi_volume1", slice(0, 15)),
]


def _corpus_entries(corpus: Path) -> list[Entry]:
    manifest_path = corpus / "dicom" / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(f"shared DICOM corpus not found at {corpus} (pass --corpus PATH)")
    cases = {c["case"]: c for c in json.loads(manifest_path.read_text())}
    entries = []
    for series in CORPUS_SERIES:
        case = cases.get(series.case)
        if case is None:
            raise BuildError(f"case {series.case} is missing from {manifest_path}")
        files = sorted(p for p in (corpus / "dicom" / case["input"]).iterdir() if p.is_file())
        if series.files is not None:
            files = files[series.files]
        if not files:
            raise BuildError(f"case {series.case} has no input files")
        for src in files:
            entries.append(
                Entry(
                    f"{series.out}/{src.name}",
                    f"shared corpus case {series.case} (github.com/{case['source_repo']} @ {case['source_commit'][:12]})",
                    case["license"],
                    _copier(src),
                    series.case,
                    {
                        "kind": "dicom",
                        "series": series.out,
                        "corpus_case": series.case,
                        "modality": case["modality"],
                        "vendor": case["vendor"],
                        "corpus_reference_shape": case["shape"],
                        "corpus_reference_zooms": case["zooms"],
                        "subset_of_series": series.files is not None,
                    },
                )
            )
    return entries


# --------------------------------------------------------------------------------------------------------------
# 4. Other real scans shipped by installed packages (copied byte for byte)
# --------------------------------------------------------------------------------------------------------------
NIBABEL_FILES = {
    "tests/data/example4d.nii.gz": "nifti/nibabel/example4d.nii.gz",
    "tests/data/anatomical.nii": "nifti/nibabel/anatomical.nii",
}


def _nibabel_entries() -> list[Entry]:
    entries = []
    for rel, out in NIBABEL_FILES.items():
        src = _package_file("nibabel", rel)
        img = nib.load(src)
        entries.append(
            Entry(
                out,
                f"nibabel {_version('nibabel')} wheel: nibabel/{rel}",
                "MIT",
                _copier(src),
                f"nibabel/{rel}",
                {"kind": "nifti", "shape": list(img.shape), "dtype": str(img.get_data_dtype().newbyteorder("="))},
            )
        )
    return entries


# --------------------------------------------------------------------------------------------------------------
# Licence texts
# --------------------------------------------------------------------------------------------------------------
def _license_entries(corpus: Path) -> list[Entry]:
    entries = [
        Entry("LICENSES/MNI_ICBM152.txt", "MNI notice (build script)", "MNI-ICBM152", _text_writer(MNI_NOTICE)),
        Entry(
            "LICENSES/nilearn.txt",
            f"nilearn {_version('nilearn')} dist-info LICENSE",
            "BSD-3-Clause",
            _copier(_dist_license("nilearn", "LICENSE")),
        ),
        Entry(
            "LICENSES/pydicom.txt",
            f"pydicom {_version('pydicom')} dist-info LICENSE",
            "MIT",
            _copier(_dist_license("pydicom", "LICENSE")),
        ),
        Entry(
            "LICENSES/nibabel.txt",
            f"nibabel {_version('nibabel')} dist-info COPYING",
            "MIT",
            _copier(_dist_license("nibabel", "COPYING")),
        ),
    ]
    for name, lic in (
        ("dcm_qa.txt", "BSD-2-Clause"),
        ("dcm_qa_nih.txt", "BSD-2-Clause"),
        ("dcm_qa_xa30.txt", "BSD-2-Clause"),
        ("dicom2nifti.txt", "MIT"),
    ):
        src = corpus / "LICENSES" / name
        if not src.is_file():
            raise BuildError(f"licence text {src} is missing from the shared corpus")
        entries.append(Entry(f"LICENSES/{name}", f"shared corpus LICENSES/{name}", lic, _copier(src)))
    for e in entries:
        e.extra["kind"] = "license"
    return entries


def plan(corpus: Path) -> list[Entry]:
    """Return every output file of the build, in a stable order."""
    entries = _mni_entries() + _pydicom_entries() + _corpus_entries(corpus) + _nibabel_entries()
    entries += _license_entries(corpus)
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise BuildError("two sources map to the same output path")
    return sorted(entries, key=lambda e: e.path)


def _verify(dest: Path, entry: Entry) -> None:
    kind = entry.extra.get("kind")
    if kind == "nifti":
        img = nib.load(dest)
        if list(img.shape) != entry.extra["shape"]:
            raise BuildError(f"{entry.path}: shape {img.shape} != {entry.extra['shape']}")
    elif kind == "dicom":
        ds = pydicom.dcmread(dest)
        if "PixelData" not in ds:
            raise BuildError(f"{entry.path}: no pixel data")


def build(out_dir: Path, corpus: Path) -> dict:
    """Write every sample file and ``MANIFEST.json`` under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Destination folder (normally ``sample_data/``).
    corpus : Path
        The shared corpus folder (holding ``dicom/manifest.json`` and ``LICENSES/``).

    Returns
    -------
    dict
        The manifest that was written.
    """
    entries = plan(corpus)
    rows = []
    for e in entries:
        dest = out_dir / e.path
        e.write(dest)
        _verify(dest, e)
        rows.append(
            {"path": e.path, "bytes": dest.stat().st_size, "sha256": _sha256(dest), "source": e.source}
            | {"license": e.license, "origin": e.origin or e.source}
            | e.extra
        )
    # Remove files left over from an older build inside the folders the build owns.
    keep = {out_dir / e.path for e in entries}
    for sub in MANAGED_DIRS:
        for p in sorted((out_dir / sub).rglob("*"), reverse=True):
            if p.is_file() and p not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    total = sum(r["bytes"] for r in rows)
    manifest = {
        "description": "Real scans for medgan demos and tests; rebuilt by sample_data/build_sample_data.py",
        "total_bytes": total,
        "files": rows,
    }
    _atomic_write_bytes(out_dir / "MANIFEST.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    if total > MAX_TOTAL_BYTES:
        raise BuildError(f"sample data is {total} bytes, over the {MAX_TOTAL_BYTES} byte budget")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=f"shared corpus (default {DEFAULT_CORPUS})")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument(
        "--check", action="store_true", help="rebuild into a temporary folder and compare with MANIFEST.json"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                new = build(Path(tmp), args.corpus)
            old = json.loads((args.out / "MANIFEST.json").read_text())
            old_sums = {r["path"]: r["sha256"] for r in old["files"]}
            new_sums = {r["path"]: r["sha256"] for r in new["files"]}
            diff = sorted(p for p in old_sums.keys() | new_sums.keys() if old_sums.get(p) != new_sums.get(p))
            for p in diff:
                print(f"differs: {p}")
            print("identical" if not diff else f"{len(diff)} file(s) differ")
            return 0 if not diff else 1
        manifest = build(args.out, args.corpus)
    except BuildError as exc:
        print(f"build_sample_data: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(manifest['files'])} files, {manifest['total_bytes']} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

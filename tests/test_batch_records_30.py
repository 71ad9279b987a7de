"""``medgan batch upscale`` / ``batch synthesize`` outputs record their input's name and sha256, as ``medgan
upscale`` / ``medgan synthesize`` of one scan do (``meta["medgan"]["input_file"]``), so a paper can say which input
each output came from. Real data: nibabel's ``anatomical.nii``, the Hitachi DICOM series, an MNI tissue slice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from medgan.io.digest import file_sha256
from pipelines.cli import main
from tests.conftest import SAMPLE_DATA, mni_tissue_slice, save_tiny_sr, save_tiny_synthesizer

ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def _sidecars(root: Path) -> dict[str, dict]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def test_batch_upscale_outputs_record_their_input(tmp_path):
    tree = tmp_path / "in"
    (tree / "nifti").mkdir(parents=True)
    img = nib.load(ANATOMICAL).slicer[0:32, 0:32, 0:6]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), tree / "nifti" / "t1.nii")
    shutil.copytree(HITACHI, tree / "dicom")
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(model), "--device", "cpu", "--quiet"]) == 0
    records = {rel: side["input_file"] for rel, side in _sidecars(out).items() if "input_file" in side}
    assert len(records) == 2
    nifti = next(r for rel, r in records.items() if rel.startswith("nifti/"))
    assert (nifti["files"], nifti["sha256"]) == (1, file_sha256(tree / "nifti" / "t1.nii"))
    series = next(r for rel, r in records.items() if rel.startswith("dicom/"))
    files = sorted(p for p in (tree / "dicom").iterdir() if p.is_file())
    # the documented recipe: sha256sum FILES | cut -d' ' -f1 | sort | sha256sum
    digest = hashlib.sha256("".join(f"{d}\n" for d in sorted(file_sha256(f) for f in files)).encode()).hexdigest()
    assert (series["files"], series["sha256"]) == (len(files), digest)
    assert str(tmp_path) not in json.dumps(records)


def test_batch_synthesize_outputs_record_their_label_map(tmp_path):
    tissue = nib.load(mni_tissue_slice(tmp_path / "mni" / "z80.nii.gz", 80))
    # the tiny model's values: 0 background, 1 grey, 2 white matter (the slice holds 0, 2, 3)
    values = np.asarray(tissue.dataobj)
    src = tmp_path / "labels" / "z80.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(np.where(values > 0, values - 1, 0).astype(np.uint8), tissue.affine), src)
    model = save_tiny_synthesizer(tmp_path / "syn.safetensors")
    out = tmp_path / "out"
    assert main(["batch", "synthesize", str(src.parent), str(out), "--model", str(model), "-n", "2", "--quiet"]) == 0
    records = [side["input_file"] for side in _sidecars(out).values() if "input_file" in side]
    assert len(records) == 2
    assert all(r == {"name": "z80.nii.gz", "files": 1, "sha256": file_sha256(src)} for r in records)

"""A link inside the input tree that leads into OUT_ROOT does not make a run take its own outputs as inputs:
check_roots compared the two roots only, and discovery follows folder links, so every rerun upscaled (or
synthesized from, or scored) what the previous run had written. Such scans are left out, with one logged line."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_label_map, save_tiny_sr, save_tiny_synthesizer

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained 3-D x2 SR checkpoint and a tiny untrained 2-D SPADE synthesizer (real save APIs)."""
    root = tmp_path_factory.mktemp("models")
    return save_tiny_sr(root / "sr.safetensors"), save_tiny_synthesizer(root / "syn.safetensors")


def crop(dst: Path, src: Path, box: tuple[slice, ...], *, labels: bool = False) -> Path:
    img = nib.load(src).slicer[box]
    data = np.asarray(img.dataobj)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8) if labels else data, img.affine), dst)
    return dst


def outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))


@pytest.mark.parametrize("job", ["upscale", "synthesize"])
def test_a_link_to_the_output_folder_does_not_feed_the_outputs_back(tmp_path, models, job):
    sr, syn = models
    src, out = tmp_path / "in", tmp_path / "out"
    mni_label_map(src / "n" / "map.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    (src / "outlink").symlink_to(out, target_is_directory=True)  # dangling until the first run creates out
    args = ["batch", job, str(src), str(out), "--model", str(sr if job == "upscale" else syn), "--quiet"]
    assert main(args) == 0
    first = outputs(out)
    assert len(first) == 1
    assert main(args) == 0  # was: also upscaled outlink/n/<id>.nii.gz into out/outlink/n/
    assert main(args) == 0
    assert outputs(out) == first
    rows = read_rows(out / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["done", "skipped", "skipped"]
    log = (out / "medgan.log").read_text()
    assert "ignored 1 scan(s)" in log and "inside the output folder" in log and "outlink/n/" in log


def test_a_file_link_into_the_output_folder_is_left_out_and_an_input_inside_it_is_kept(tmp_path, models):
    sr, _ = models
    out = tmp_path / "out"
    src = out / "lr"  # an input folder inside OUT_ROOT keeps its own scans
    crop(src / "a" / "anat.nii.gz", SAMPLE / "nifti" / "nibabel" / "anatomical.nii", (slice(8, 24), slice(10, 26)))
    args = ["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"]
    assert main(args) == 0
    (written,) = [o for o in outputs(out) if not o.startswith("lr/")]
    (src / "b").mkdir()
    (src / "b" / "again.nii.gz").symlink_to(out / written)  # a file link to an output
    assert main(args) == 0
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")] == ["done", "skipped"]


def test_batch_evaluate_leaves_out_scans_inside_its_output_folder(tmp_path):
    anat = SAMPLE / "nifti" / "nibabel" / "anatomical.nii"
    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    crop(ref / "s" / "anat.nii.gz", anat, (slice(8, 40), slice(10, 42)))
    shutil.copytree(ref, pred)
    crop(out / "stray" / "other.nii.gz", anat, (slice(0, 32), slice(0, 32)))  # a scan kept in the output folder
    (ref / "outlink").symlink_to(out, target_is_directory=True)
    args = ["batch", "evaluate", str(pred), str(ref), str(out), "--quiet", "--max-montages", "0"]
    assert main(args) == 0  # was 3: outlink/stray/other.nii.gz a reference without a prediction
    assert [r["status"] for r in read_rows(out / "manifest.jsonl")] == ["done"]

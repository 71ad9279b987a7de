"""Review 23 (real MNI data, real ``medgan synthesize`` / ``medgan labels`` runs):

1. a file ``medgan synthesize`` wrote, given to ``SyntheticAugmentedDataset`` as a real pair, was served as a real
   item (``item["synthetic"]`` False) while its own record said synthetic; a cache-only folder of the command's
   outputs (``OUT.nii.gz`` + ``OUT_labels.nii.gz``) was "no synthetic pairs" without saying how to make it one;
2. ``medgan labels --gm LABELS`` (an integer label map) and ``--gm T1 --wm T1`` wrote meaningless maps, exit 0;
3. the shape-mismatch error of ``tissue_labels`` named neither the files nor which shape was whose.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_label_map, save_tiny_synthesizer

import medgan
from medgan.data.labels import tissue_labels
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.errors import MedganError
from pipelines.cli import EXIT_FAILED
from pipelines.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(50, 82), slice(70, 102), slice(80, 81))  # a real 32 x 32 axial slice of the MNI grid
CROP = (slice(40, 104), slice(60, 124), slice(78, 81))  # 64 x 64 x 3 around the ventricles: all four tissues


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory) -> tuple[Path, Path]:
    """``medgan synthesize --deform`` outputs (image and deformed label map, with their sidecars) of a real MNI
    label slice, written by the command itself with a tiny synthesizer."""
    folder = tmp_path_factory.mktemp("syn")
    model = save_tiny_synthesizer(folder / "tiny.pt")
    labels = mni_label_map(folder / "labels.nii.gz", BOX)
    out = folder / "out" / "syn.nii.gz"
    out.parent.mkdir()
    argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out), "--seed", "3"]
    assert cli_main([*argv, "--deform"]) == 0
    lab = out.with_name("syn_labels.nii.gz")
    assert medgan.load_scan(out).meta["medgan"]["synthetic"] is True  # read back marked synthetic
    return out, lab


# ------------------------------------------------------------------ 1: synthetic files are not real pairs


def test_a_synthesized_file_given_as_a_real_pair_is_refused_with_the_cache_names(synthesized):
    img, lab = synthesized
    ds = SyntheticAugmentedDataset([{"image": str(img), "label": str(lab)}], ratio=0.0)
    with pytest.raises(MedganError) as err:
        ds[0]  # was served as a real item: item["synthetic"] False beside meta["medgan"]["synthetic"] True
    msg = str(err.value)
    assert "real pair 0" in msg and str(img) in msg and "synthetic" in msg, msg
    assert "cache_dir=" in msg and "synthesizer=None" in msg, msg
    # the exact names a cache-only dataset reads, sidecars included
    for name in ("syn_image.nii.gz", "syn_label.nii.gz", "syn.json -> syn_image.json", "syn_label.json"):
        assert name in msg, (name, msg)


def test_a_synthetic_scan_in_memory_is_refused_when_the_dataset_is_made(synthesized):
    img, _ = synthesized
    real_label = mni_label_map(img.parent.parent / "real_labels.nii.gz", BOX)
    scan = medgan.load_scan(img)
    with pytest.raises(MedganError, match=r"real pair 0: its image .*is synthetic"):
        SyntheticAugmentedDataset([{"image": scan, "label": str(real_label)}], ratio=0.0)
    # the same scan without its record (a deliberate choice to use it as real data) is a real item
    scan.meta.pop("medgan")
    item = SyntheticAugmentedDataset([{"image": scan, "label": str(real_label)}], ratio=0.0)[0]
    assert item["synthetic"] is False and item["image"].meta["medgan"]["synthetic"] is False


def test_cli_outputs_in_a_cache_folder_name_the_renames_that_make_them_pairs(synthesized, tmp_path):
    img, lab = synthesized
    folder = tmp_path / "cache"
    shutil.copytree(img.parent, folder)
    # the real pair the synthetic ones came from (read only for its dimensions: ratio=1)
    real = [{"image": str(img.parent.parent / "labels.nii.gz"), "label": str(img.parent.parent / "labels.nii.gz")}]
    with pytest.raises(MedganError) as err:
        SyntheticAugmentedDataset(real, synthesizer=None, cache_dir=folder, ratio=1.0, length=2)
    msg = str(err.value)
    for name in ("syn.nii.gz", "syn_image.nii.gz", "syn_labels.nii.gz", "syn_label.nii.gz", "syn_image.json"):
        assert name in msg, (name, msg)
    # the renames the message gives make the folder a cache-only dataset, provenance kept
    for old, new in (("syn", "syn_image"), ("syn_labels", "syn_label")):
        (folder / f"{old}.nii.gz").rename(folder / f"{new}.nii.gz")
        (folder / f"{old}.json").rename(folder / f"{new}.json")
    ds = SyntheticAugmentedDataset(real, synthesizer=None, cache_dir=folder, ratio=1.0, length=2)
    item = ds[0]
    assert item["synthetic"] is True and item["image"].meta["medgan"]["synthetic"] is True
    assert item["image"].meta["medgan"]["task"] == "synthesis"
    assert torch.equal(
        item["label"].as_tensor().reshape(-1), medgan.load_scan(folder / "syn_label.nii.gz").as_tensor().reshape(-1)
    )


# ------------------------------------------------------------------ 2, 3: medgan labels refuses non-probability maps


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    """Crops of the real MNI GM, WM and T1 (uint8 0..255, world geometry kept), and the label map ``medgan labels``
    makes of them."""
    folder = tmp_path_factory.mktemp("maps")
    out = {}
    for name in ("gm", "wm", "t1"):
        out[name] = folder / f"{name}.nii.gz"
        nib.save(nib.load(MNI / f"{name}.nii.gz").slicer[CROP], out[name])
    out["labels"] = folder / "labels.nii.gz"
    assert cli_main(["labels", "--gm", str(out["gm"]), "--wm", str(out["wm"]), str(out["labels"])]) == 0
    return out


def _labels(capsys, out: Path, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(["labels", *argv, str(out)])
    return code, capsys.readouterr().err


def test_labels_refuses_a_label_map_as_a_probability_map(maps, tmp_path, capsys):
    code, err = _labels(capsys, tmp_path / "a.nii.gz", "--gm", str(maps["labels"]), "--wm", str(maps["wm"]))
    assert code == EXIT_FAILED and "label map" in err and str(maps["labels"]) in err, err
    assert not (tmp_path / "a.nii.gz").exists()
    # the same map without its sidecar (another tool's integer SEG map): refused by its values
    bare = tmp_path / "seg.nii.gz"
    img = nib.load(maps["labels"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8), img.affine), bare)
    code, err = _labels(capsys, tmp_path / "b.nii.gz", "--gm", str(maps["gm"]), "--wm", str(bare))
    assert code == EXIT_FAILED and "integer label map" in err and "0, 1, 2, 3" in err and str(bare) in err, err
    assert not (tmp_path / "b.nii.gz").exists()
    # maps quantised to 0..3 (probability x 3, rounded) look like label maps: scale= vouches for them
    g, w = (np.round(np.asarray(nib.load(maps[n]).dataobj, dtype=np.float64) / 255 * 3)[None] for n in ("gm", "wm"))
    with pytest.raises(MedganError, match="integer label map"):
        tissue_labels(g, w)
    np.testing.assert_array_equal(tissue_labels(g, w, scale=3).numpy(), tissue_labels(g / 3, w / 3).numpy())


def test_labels_refuses_one_map_given_as_gm_and_wm(maps, tmp_path, capsys):
    code, err = _labels(capsys, tmp_path / "a.nii.gz", "--gm", str(maps["t1"]), "--wm", str(maps["t1"]))
    assert code == EXIT_FAILED and "same file" in err and str(maps["t1"]) in err, err
    assert not (tmp_path / "a.nii.gz").exists()
    # one array given twice to the library
    t1 = medgan.load_scan(maps["t1"])
    with pytest.raises(MedganError, match="GM and WM maps are the same"):
        tissue_labels(t1.numpy(), t1.numpy())


def test_labels_refuses_values_no_probability_map_holds(maps, tmp_path):
    # the real T1 in raw-like units (x 4, up to about 1000): no 0..255 map
    t1 = medgan.load_scan(maps["t1"])
    with pytest.raises(MedganError, match=r"WM map holds values \d+\.\.\d+, not a probability map's 0\.\.255"):
        tissue_labels(medgan.load_scan(maps["gm"]), t1.numpy() * 4)


def test_the_shipped_mni_maps_still_give_their_label_map(tmp_path, capsys):
    out = tmp_path / "mni.nii.gz"
    code, err = _labels(capsys, out, "--gm", str(MNI / "gm.nii.gz"), "--wm", str(MNI / "wm.nii.gz"))
    assert code == 0, err
    # the rule of tissue_labels, computed here from the 0..255 maps
    g, w = (np.asarray(nib.load(MNI / f"{n}.nii.gz").dataobj, dtype=np.float64) / 255.0 for n in ("gm", "wm"))
    other = np.clip(1.0 - g - w, 0.0, 1.0)
    expect = np.where(g + w >= 0.1, 1 + np.argmax(np.stack([other, g, w]), axis=0), 0)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), expect)


def test_the_shape_error_names_each_map_and_its_shape(maps, tmp_path, capsys):
    code, err = _labels(capsys, tmp_path / "a.nii.gz", "--gm", str(MNI / "gm.nii.gz"), "--wm", str(maps["wm"]))
    assert code == EXIT_FAILED, err
    assert f"GM map {MNI / 'gm.nii.gz'}: (1, 155, 192, 161)" in err, err
    assert f"WM map {maps['wm']}: (1, 64, 64, 3)" in err, err

"""A label map's ``meta["labels"]`` (value -> name) survives save_scan / load_scan through the JSON sidecar (key
``label_names``), so ``synthesize --labels-out`` files say what their values mean and the Synthesizer's
declared-labels check runs on maps read from disk — on the real MNI GM/WM maps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medgan
from medgan.data.labels import TISSUE_LABELS, tissue_labels
from medgan.data.normalize import fit_normalization
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer, save_synthesizer
from medgan.io.nifti import MAX_LABEL_ENTRIES, MAX_LABEL_NAME_LENGTH, check_label_names
from medgan.io.scan import make_scan
from medgan.models.registry import build_cgan_generator
from pipelines.cli import main as cli_main

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
TINY_G = {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8}
NAMES = {str(k): v for k, v in TISSUE_LABELS.items()}

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def mni():
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    return t1, tissue_labels(gm, wm)


@pytest.fixture(scope="module")
def model(mni, tmp_path_factory):
    torch.manual_seed(0)
    norm = fit_normalization(mni[0], method="percentile", lower=0.0, upper=99.5)
    path = tmp_path_factory.mktemp("synth") / "mni2d.safetensors"
    return save_synthesizer(path, build_cgan_generator(TINY_G), labels=TISSUE_LABELS, normalization=norm)


def _crop(labels):
    return labels[:, 40:72, 50:82, 78:82]


def test_round_trip_keeps_labels(mni, tmp_path):
    labels = mni[1]
    assert labels.meta["labels"] == NAMES  # 0 background, 1 csf_other, 2 grey_matter, 3 white_matter
    path = medgan.save_scan(labels, tmp_path / "lm.nii.gz")
    side = json.loads((tmp_path / "lm.json").read_text())
    assert side["label_names"] == NAMES and side["modality"] == "SEG"
    back = medgan.load_scan(path)
    assert back.meta["labels"] == NAMES
    assert "label_names" not in back.meta.get("medgan", {})  # not taken for provenance
    assert np.array_equal(back.numpy(), labels.numpy())
    # saved again, unchanged
    medgan.save_scan(back, tmp_path / "again.nii.gz")
    assert json.loads((tmp_path / "again.json").read_text())["label_names"] == NAMES


def test_int_keys_and_sanitised_names(mni, tmp_path):
    crop = _crop(mni[1])
    meta = {k: v for k, v in crop.meta.items() if k not in ("affine", "original_affine", "spacing")}
    meta["labels"] = {np.int64(3): "white_matter", 0: "background\x00\n", 1.0: " csf_other ", "2": "g" * 500}
    medgan.save_scan(make_scan(crop.numpy(), np.asarray(crop.affine), meta), tmp_path / "lm.nii.gz")
    side = json.loads((tmp_path / "lm.json").read_text())
    names = side["label_names"]
    assert list(names) == ["0", "1", "2", "3"]
    assert names["0"] == "background" and names["1"] == "csf_other" and names["2"] == "g" * MAX_LABEL_NAME_LENGTH


@pytest.mark.parametrize(
    "bad",
    [
        ["background", "csf_other"],  # not a mapping
        {"grey": "grey_matter"},  # key not a label value
        {True: "background"},  # bool is no label value
        {1: 2},  # name not a string
        {1: "\x00\x01"},  # nothing printable
        {1: "a", "1": "b"},  # one value, two names
        {str(k): "x" for k in range(MAX_LABEL_ENTRIES + 1)},  # too many
        {},
    ],
)
def test_malformed_meta_labels_not_written(mni, tmp_path, caplog, bad):
    crop = _crop(mni[1])
    meta = {k: v for k, v in crop.meta.items() if k not in ("affine", "original_affine", "spacing")}
    meta["labels"] = bad
    with pytest.raises(ValueError):
        check_label_names(bad)
    with caplog.at_level(logging.WARNING, logger="medgan.io.save"):
        path = medgan.save_scan(make_scan(crop.numpy(), np.asarray(crop.affine), meta), tmp_path / "lm.nii.gz")
    assert "meta['labels'] not written" in caplog.text
    side = json.loads((tmp_path / "lm.json").read_text())
    assert "label_names" not in side and side["modality"] == "SEG"
    assert "labels" not in medgan.load_scan(path).meta


@pytest.mark.parametrize(
    "entry",
    [
        ["background"],
        {"two": "grey_matter"},
        {"2": 7},
        {str(k): "x" for k in range(MAX_LABEL_ENTRIES + 1)},
    ],
)
def test_malformed_sidecar_entry_ignored(mni, tmp_path, caplog, entry):
    """As with the other sidecar keys, a malformed entry is ignored (here with a warning), never half-read."""
    path = medgan.save_scan(_crop(mni[1]), tmp_path / "lm.nii.gz")
    side_path = tmp_path / "lm.json"
    side = json.loads(side_path.read_text())
    side["label_names"] = entry
    side_path.write_text(json.dumps(side))
    with caplog.at_level(logging.WARNING, logger="medgan.io.nifti"):
        back = medgan.load_scan(path)
    assert "labels" not in back.meta
    assert "'label_names' ignored" in caplog.text
    assert back.meta["modality"] == "SEG"  # the rest of the sidecar still read
    assert "label_names" not in back.meta.get("medgan", {})


def test_foreign_sidecar_not_trusted(mni, tmp_path):
    """A sidecar next to a file medgan did not write (descrip not "medgan ...") is ignored, labels too."""
    crop = _crop(mni[1])
    path = tmp_path / "lm.nii.gz"
    nib.save(nib.Nifti1Image(crop.numpy()[0], np.asarray(crop.affine)), path)
    (tmp_path / "lm.json").write_text(json.dumps({"label_names": {"2": "white_matter", "3": "grey_matter"}}))
    assert "labels" not in medgan.load_scan(path).meta


def test_swapped_names_refused_after_loading(model, mni, tmp_path):
    crop = _crop(mni[1])
    meta = {k: v for k, v in crop.meta.items() if k not in ("affine", "original_affine", "spacing")}
    meta["labels"] = {**NAMES, "2": "white_matter", "3": "grey_matter"}
    path = medgan.save_scan(make_scan(crop.numpy(), np.asarray(crop.affine), meta), tmp_path / "swapped.nii.gz")
    synth = Synthesizer.from_pretrained(model, device="cpu")
    with pytest.raises(MedganError, match="disagree"):
        synth.generate(medgan.load_scan(path), seed=1)
    with pytest.raises(MedganError, match="disagree"):
        synth.generate(path, seed=1)  # a path is read the same way
    # the correctly named map is accepted
    good = medgan.save_scan(crop, tmp_path / "good.nii.gz")
    assert synth.generate(good, seed=1).shape == (1, 32, 32, 4)


def test_synthetic_image_provenance_labels_stay_provenance(model, mni, tmp_path):
    """A synthetic image's provenance has its own ``labels`` (the model's): read back, it stays in meta["medgan"]
    and does not make the image a label map."""
    synth = Synthesizer.from_pretrained(model, device="cpu")
    out = synth.generate(_crop(mni[1]), seed=2)
    assert "labels" not in out.meta
    path = medgan.save_scan(out, tmp_path / "syn.nii.gz")
    side = json.loads((tmp_path / "syn.json").read_text())
    assert "label_names" not in side and side["labels"] == NAMES
    back = medgan.load_scan(path)
    assert "labels" not in back.meta and back.meta["medgan"]["labels"] == NAMES


def test_synthesize_labels_out_keeps_labels(model, mni, tmp_path):
    labels_path = medgan.save_scan(_crop(mni[1]), tmp_path / "labels.nii.gz")
    out = tmp_path / "syn.nii.gz"
    base = ["synthesize", "--model", str(model), "--labels", str(labels_path), "--out", str(out), "--seed", "4"]
    assert cli_main([*base, "--deform", "--labels-out", str(tmp_path / "def.nii.gz")]) == 0
    side = json.loads((tmp_path / "def.json").read_text())
    assert side["label_names"] == NAMES and side["task"] == "label-deformation"
    assert medgan.load_scan(tmp_path / "def.nii.gz").meta["labels"] == NAMES

    # a map without declared labels (plain NIfTI): its values were read as the model's, and the file says so
    plain = tmp_path / "plain.nii.gz"
    crop = _crop(mni[1])
    nib.save(nib.Nifti1Image(crop.numpy()[0], np.asarray(crop.affine)), plain)
    base[4] = str(plain)
    # --overwrite: OUT (syn.nii.gz) was written by the first run; an existing output is refused without it
    assert cli_main([*base, "--labels-out", str(tmp_path / "plain_out.nii.gz"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "plain_out.json").read_text())["label_names"] == NAMES

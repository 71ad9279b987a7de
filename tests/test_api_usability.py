"""medgan used as a Python library: warnings and records a user of the API relies on, on real data.

* ``Synthesizer.generate`` on a thin 3-D slab with a ``"slice_position"`` model spread the default positions 0..1
  (bottom to top of a head) over the slab's few slices without a word;
* ``save_scan`` of a scan read from DICOM, without ``reference=``, silently wrote a new study without the source's
  identifiers;
* a batch of ``SyntheticAugmentedDataset`` items mixing real and synthetic ones lost ``meta["medgan"]`` for every
  item after ``decollate_batch``, as real items had none.
"""

from __future__ import annotations

import logging

import pydicom
import pytest
import torch
from conftest import SAMPLE_DATA
from monai.data import DataLoader, decollate_batch

import medgan
from medgan.data.labels import tissue_labels
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset
from medgan.io.scan import take_slice

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
DICOM_SERIES = SAMPLE_DATA / "dicom" / "pydicom_mr_small"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mni_pair():
    """The real MNI T1 and its tissue labels (values of ``brain-t1-tissue-2d``), cropped in-plane to 64 x 64 so the
    shipped generator runs fast; full extent (161 slices) along the slice axis."""
    t1 = medgan.load_scan(MNI / "t1.nii.gz")
    labels = tissue_labels(medgan.load_scan(MNI / "gm.nii.gz"), medgan.load_scan(MNI / "wm.nii.gz"), t1=t1)
    box = (slice(None), slice(50, 114), slice(60, 124))
    return t1[box], labels[box]


@pytest.fixture(scope="module")
def synth():
    return medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")


def _thin_slab_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "medgan.infer.synthesis" and r.levelno == logging.WARNING and "slab" in r.getMessage()
    ]


def test_a_thin_slab_with_default_slice_positions_warns_once(mni_pair, synth, caplog):
    """A 4-slice slab got positions 0, 0.33, 0.67, 1 (bottom to top of a head) silently; a 2-D map already warned.
    It now warns, naming the slab's and the training volumes' slice counts, once per map."""
    _, labels = mni_pair
    slab = labels[..., 80:84]
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        out = synth.generate(slab, seed=0)
        synth.generate(slab, seed=1)  # the same map again: no second warning
    assert out.meta["medgan"]["condition"]["scalar"] == "slice_position"
    warned = _thin_slab_warnings(caplog)
    assert len(warned) == 1, warned
    assert "4 slice(s)" in warned[0] and "140 slices" in warned[0] and "spread over the given slab" in warned[0]
    assert synth.training_slice_count == 140  # train_slices [10, 149] in the shipped model's metadata
    # positions given for the slab: nothing to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(labels[..., 60:64], seed=0, condition={"scalar": [k / 160 for k in range(60, 64)]})
    assert not _thin_slab_warnings(caplog)
    # nor a volume of over half the training extent (80 of 140 slices)
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(labels[..., 40:120], seed=0, batch_size=40)
    assert not _thin_slab_warnings(caplog)


def test_the_dataset_on_a_thin_3d_pair_warns_once_per_map(mni_pair, synth, caplog):
    """SyntheticAugmentedDataset generates every synthetic item from (a deformation of) the same real map: one
    warning for the map, not one per item."""
    t1, labels = mni_pair
    fresh = medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")  # nothing warned yet
    ds = SyntheticAugmentedDataset(
        [{"image": t1[..., 100:104], "label": labels[..., 100:104]}], synthesizer=fresh, ratio=0.5, length=6, seed=0
    )
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        items = [ds[i] for i in range(len(ds))]
    assert sum(item["synthetic"] for item in items) == 3
    warned = _thin_slab_warnings(caplog)
    assert len(warned) == 1, warned
    assert "4 slice(s)" in warned[0] and "140 slices" in warned[0]


def test_a_batch_mixing_real_and_synthetic_items_keeps_the_provenance(mni_pair, synth):
    """After monai's decollate_batch no item of a mixed batch kept meta["medgan"] (real items had no such key, and
    MONAI keeps only the meta keys all items share). Real items are now marked real in the same record."""
    t1, labels = mni_pair
    pairs = [
        {"image": take_slice(t1, k), "label": take_slice(labels, k), "condition": {"scalar": k / 160}}
        for k in (60, 80, 100)
    ]
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, length=8, seed=3)
    batches = list(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0))
    items = [item for batch in batches for item in decollate_batch(batch)]
    assert len(items) == 8
    kinds = [bool(item["synthetic"]) for item in items]
    assert any(kinds) and not all(kinds)
    assert any(any(ds.is_synthetic[i : i + 4]) and not all(ds.is_synthetic[i : i + 4]) for i in (0, 4))  # mixed
    for item, synthetic in zip(items, kinds, strict=True):
        for key in ("image", "label"):
            prov = item[key].meta["medgan"]
            assert prov["synthetic"] is synthetic
            if synthetic:
                assert prov["task"] == ("synthesis" if key == "image" else "label-deformation")
            else:
                assert prov["task"] == "real"
    real = next(item for item, synthetic in zip(items, kinds, strict=True) if not synthetic)
    assert ds[int(real["index"])]["image"].meta["medgan"] == {"task": "real", "synthetic": False}


def _identifying_values(scan) -> list[str]:
    source = scan.meta["dicom"]
    return [str(source[k]) for k in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName")]


def test_save_scan_to_dicom_without_reference_says_it_leaves_the_source_study(tmp_path, caplog):
    """A scan read from DICOM written without reference= got a new StudyInstanceUID / FrameOfReferenceUID and no
    PatientID without a word; it is now logged (no identifying value), and reference= keeps the study."""
    scan = medgan.load_scan(DICOM_SERIES)
    values = _identifying_values(scan)
    assert all(values)
    with caplog.at_level(logging.INFO, logger="medgan.io.save"):
        new = medgan.save_scan(scan, tmp_path / "new")
    said = [r for r in caplog.records if r.name == "medgan.io.save"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    message = said[0].getMessage()
    assert "new study" in message and "reference=" in message
    assert not any(v in message for v in values)  # never an identifying value
    written = pydicom.dcmread(next(new.glob("*.dcm")))
    assert written.StudyInstanceUID != scan.meta["dicom"]["StudyInstanceUID"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medgan.io.save"):
        kept = medgan.save_scan(scan, tmp_path / "kept", reference=DICOM_SERIES)
    assert not [r for r in caplog.records if r.name == "medgan.io.save"]
    written = pydicom.dcmread(next(kept.glob("*.dcm")))
    assert written.StudyInstanceUID == scan.meta["dicom"]["StudyInstanceUID"]
    # a scan not read from DICOM has no study to leave: nothing logged
    with caplog.at_level(logging.INFO, logger="medgan.io.save"):
        medgan.save_scan(medgan.load_scan(MNI / "t1.nii.gz")[:, 60:80, 60:80, 70:72], tmp_path / "nifti_source")
    assert not [r for r in caplog.records if r.name == "medgan.io.save"]

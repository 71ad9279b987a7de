"""A 2-D synthesis model generates slices across the anatomical plane it was trained on, or says so.

``axis`` is a voxel axis: a label map stored PIR (a sagittal acquisition) was generated in sagittal slices by the
shipped model, trained on axial slices of the RAS-stored MNI template, without a word; stored LAI, its slice-position
condition ran from the top of the head down. Real data: the MNI ICBM152 GM / WM maps under ``sample_data/``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import SAMPLE_DATA
from monai.transforms import Orientation

import medgan
from medgan.data.labels import tissue_labels

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = [
    pytest.mark.skipif(not (MNI / "gm.nii.gz").is_file(), reason="sample_data MNI maps missing"),
    pytest.mark.usefixtures("torch_one_thread"),
]


@pytest.fixture(scope="module")
def labels():
    full = tissue_labels(MNI / "gm.nii.gz", MNI / "wm.nii.gz")
    return full[:, 40:150, 40:180, 70:78]  # RAS, 8 axial slices


@pytest.fixture(scope="module")
def synth():
    return medgan.Synthesizer("brain-t1-tissue-2d")


def _plane_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "of the label map (orientation" in r.getMessage()]


def test_the_shipped_model_knows_it_was_trained_on_axial_slices(synth):
    assert synth.training_slice_normal == "S"


def test_a_map_stored_in_the_training_orientation_gives_no_warning(synth, labels, caplog):
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(labels, n=1, seed=0)
    assert _plane_warnings(caplog) == []


def test_a_sagittal_slice_axis_is_named(synth, labels, caplog):
    pir = Orientation(axcodes="PIR")(labels)
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(pir[:, :, :, 60:68], n=1, seed=0)
    (message,) = _plane_warnings(caplog)
    assert "axis 2 of the label map (orientation PIR) is sagittal (R)" in message
    assert "trained on axial slices" in message and "Orientation(axcodes='RAS')" in message


def test_slices_stacked_downwards_are_named_for_a_slice_position_model(synth, labels, caplog):
    lai = Orientation(axcodes="LAI")(labels)
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(lai, n=1, seed=0)
    (message,) = _plane_warnings(caplog)
    assert "runs I, against the training volumes' S (slice positions run backwards)" in message


def test_a_plain_array_has_no_anatomy_to_check(synth, labels, caplog):
    with caplog.at_level(logging.WARNING, logger="medgan.infer.synthesis"):
        synth.generate(np.asarray(Orientation(axcodes="PIR")(labels))[:, :, :, 60:68], n=1, seed=0)
    assert _plane_warnings(caplog) == []

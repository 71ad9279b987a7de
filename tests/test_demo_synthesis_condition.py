"""The demo's synthetic pairs are conditioned on the slice position as the model was trained on it
(``k / (N - 1)`` along the axial axis, :mod:`medgan.data.cgan_data`): each image is the shipped model's output for
its deformed label slice at that position."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE_DATA

import medgan
from medgan.data.labels import deform_labels, tissue_labels
from medgan.io.scan import take_slice
from pipelines.demo import SYNTH, _synthesis

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_demo_pairs_are_generated_at_their_slice_position(tmp_path):
    _synthesis(SAMPLE_DATA, tmp_path, quiet=True)
    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    gm, wm, t1 = (medgan.load_scan(mni / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    synth = medgan.Synthesizer.from_pretrained(SYNTH, device="cpu")
    i, z = 1, 72  # the demo's second pair: axial slice 60 + 12 * i
    layout = deform_labels(take_slice(labels, z), seed=i)
    np.testing.assert_array_equal(medgan.load_scan(tmp_path / "synthetic" / "pair01_labels.nii.gz").numpy(), layout)
    expected = synth.generate(layout, n=1, seed=i, condition={"scalar": z / (labels.shape[-1] - 1)})
    written = medgan.load_scan(tmp_path / "synthetic" / "pair01_image.nii.gz").numpy()
    np.testing.assert_allclose(written, expected.numpy(), rtol=0, atol=1e-5)

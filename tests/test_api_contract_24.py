"""Review 24 (API and docs): evaluation masks, channel-less volumes, clear errors and warnings at the entry points.

Each test uses the real MNI T1 (and its grey-matter probability map) shipped in ``sample_data/``.
"""

from __future__ import annotations

import doctest
import logging
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SHARED, mni_t1_path
from monai.transforms import Flip

import medgan
from medgan.data.degrade import crop_to_multiple
from medgan.errors import EvaluationError, GeometryMismatchError, MedganError


@pytest.fixture(scope="module")
def pair():
    """``(pred, ref, gm)``: a cubic baseline of the MNI T1 degraded by 2, the T1 and its 0..255 grey-matter map."""
    t1 = mni_t1_path()
    ref = crop_to_multiple(medgan.load_scan(t1), 2)
    gm = crop_to_multiple(medgan.load_scan(t1.parent / "gm.nii.gz"), 2)
    return medgan.interpolate(medgan.degrade(ref, 2), 2), ref, gm


def test_a_mask_on_another_grid_is_refused_and_the_advice_fixes_it(pair):
    pred, ref, gm = pair
    flipped = Flip(0)(gm) > 128  # the reference's shape, another affine: it marks the mirrored voxels
    with pytest.raises(GeometryMismatchError, match="another voxel grid"):
        medgan.evaluate(pred, ref, mask=flipped)
    with pytest.raises(GeometryMismatchError):
        medgan.evaluate(pred, ref, mask=flipped[0])  # without its channel axis too
    from medgan.eval.compare import resample_to

    back = resample_to(flipped.float(), ref, order=0) > 0.5  # what the message advises
    assert medgan.evaluate(pred, ref, mask=back)["psnr"] == medgan.evaluate(pred, ref, mask=gm > 128)["psnr"]


def test_a_mask_must_be_boolean_or_hold_only_0_and_1(pair):
    pred, ref, gm = pair
    prob = np.asarray(gm[0])  # 0..255: every nonzero voxel counted as inside (41 % against 23 % for > 128)
    with pytest.raises(EvaluationError, match="threshold it first"):
        medgan.evaluate(pred, ref, mask=prob)
    with pytest.raises(EvaluationError, match="non-finite"):  # NaN outside counted as inside: the whole image
        medgan.evaluate(pred, ref, mask=np.where(prob > 128, 1.0, np.nan))
    binary = medgan.evaluate(pred, ref, mask=(prob > 128).astype(np.float32))
    assert binary == medgan.evaluate(pred, ref, mask=prob > 128)
    assert binary["mask_fraction"] == pytest.approx(float((prob > 128).mean()))


@pytest.mark.usefixtures("fresh_warnings")
def test_a_volume_without_channel_axis_is_warned_about(pair, caplog):
    t1 = mni_t1_path()
    volume = nib.load(t1).get_fdata(dtype=np.float32)[:152, :, :160]  # (X, Y, Z), as nibabel gives it
    with caplog.at_level(logging.WARNING, logger="medgan.io.scan"):
        low = medgan.degrade(volume, 2)
    assert tuple(low.shape) == (152, 96, 80)  # still read channel-first (the contract), but said
    said = [r.getMessage() for r in caplog.records if r.name == "medgan.io.scan"]
    assert said and "152 channels" in said[0] and "x[None]" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.io.scan"):
        medgan.degrade(volume[None], 2)  # channel-first: nothing to say
        medgan.degrade(np.stack([volume[:, :, 80]] * 3), 2)  # an RGB-like 2-D image: 3 channels are plausible
    assert not [r for r in caplog.records if r.name == "medgan.io.scan"]


def test_adapt_to_scan_takes_a_model_name(pair):
    _, ref, _ = pair
    low = medgan.degrade(ref[:, 40:104, 60:124, 60:92], 2)
    adapted = medgan.adapt_to_scan("brain-mr-x2-3d", low, steps=0, seed=0)
    assert adapted.model_name == "brain-mr-x2-3d" and adapted.adaptation["steps"] == 0
    with pytest.raises(MedganError, match="shipped model name"):
        medgan.adapt_to_scan(3, low, steps=0)


def test_bare_python_errors_are_medgan_errors(pair):
    _, ref, _ = pair
    with pytest.raises(EvaluationError, match="pred is None"):
        medgan.evaluate(None, ref)
    with pytest.raises(EvaluationError, match="ref is None"):
        medgan.evaluate(ref, None)
    image = np.asarray(ref[0, :, :, 80], dtype=np.float64)
    with pytest.raises(EvaluationError, match="differ in shape"):
        medgan.eval.spectrum_distance(image[:64, :64], image[:64, :80])


def test_an_ignored_degradation_argument_is_warned_about(pair, caplog):
    pred, ref, _ = pair
    lr = medgan.degrade(ref, 2, method="kspace")
    with caplog.at_level(logging.WARNING, logger="medgan.eval.metrics"):
        got = medgan.evaluate(pred, ref, lr=lr, degradation="interpolate")
    assert got["degradation"]["method"] == "kspace"  # the record wins, as documented
    said = [r.getMessage() for r in caplog.records if "degradation=" in r.getMessage()]
    assert len(said) == 1 and "'interpolate'" in said[0] and "'kspace'" in said[0]


def test_ssim_nan_on_a_small_image_is_warned_about_once(pair, caplog):
    _, ref, _ = pair
    slab = np.asarray(ref[:, 70:77, 90:97, 60:100], dtype=np.float64)  # 7 x 7 in-plane: no 11-voxel window fits
    with caplog.at_level(logging.WARNING, logger="medgan.eval.metrics"):
        first = medgan.evaluate(slab + 1.0, slab)
        medgan.evaluate(slab + 2.0, slab)
    assert np.isnan(first["ssim"])
    said = [r.getMessage() for r in caplog.records if "SSIM is NaN" in r.getMessage()]
    assert len(said) == 1 and "(7, 7, 40)" in said[0]


def test_model_card_of_a_shipped_name():
    from medgan.infer.pretrained import available_models, render_model_card

    card = render_model_card("brain-mr-x2-3d")
    assert card.startswith("# brain-mr-x2-3d") and card == render_model_card(available_models()["brain-mr-x2-3d"])


def test_save_scan_doctest_leaves_no_folder(tmp_path, monkeypatch):
    from medgan.io import save

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(save.save_scan, "save_scan", globs=vars(save).copy()):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert list(Path(tmp_path).iterdir()) == []


def test_docs_api_reproduces_the_shared_contract_verbatim():
    """Above its "Extensions" heading docs/API.md is the shared contract as written (it said so, with inline edits)."""
    shared = SHARED / "API.md"
    if not shared.is_file():
        if os.environ.get("MEDGAN_REQUIRE_SHARED"):
            pytest.fail(f"{shared} is missing")
        pytest.skip(f"{shared} is absent in this clone")
    text = (REPO / "docs" / "API.md").read_text(encoding="utf-8")
    head, sep, _ = text.partition("\n## Extensions in this release")
    assert sep, "docs/API.md lost its Extensions heading"
    # byte for byte, blank lines included: `diff` of the two parts, as a reader checks it, shows nothing
    assert head + "\n" == shared.read_text(encoding="utf-8")
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")  # the contract asks for one
    assert "CHANGELOG.md" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "CHANGELOG.md" in (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert 'roi_size="fit"' in changelog and "mask" in changelog

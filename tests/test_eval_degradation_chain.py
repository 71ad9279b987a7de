"""LR consistency of a scan degraded more than once: ``medgan.degrade`` keeps the earlier steps under
``meta["degradation"]["previous"]``, and the evaluation degrades the prediction back through the whole chain. It used
the last step only, so a thick-slice-then-in-plane LR failed with a shape mismatch (or, with matching shapes by
chance, compared against the wrong degradation)."""

from __future__ import annotations

import math

import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval.metrics import degradation_of, lr_consistency_psnr


@pytest.fixture(scope="module")
def hr():
    t1 = medgan.load_scan(mni_t1_path())
    return t1[:, 40:100, 50:110, 60:84]


def test_two_step_degradation_is_undone_step_by_step(hr):
    lr = medgan.degrade(medgan.degrade(hr, (1, 1, 4), method="thick_slice"), (2, 2, 1), method="kspace")
    deg = degradation_of(lr, tuple(hr.shape[1:]))
    assert deg["factor"] == (2, 2, 4)
    assert [s["method"] for s in deg["steps"]] == ["thick_slice", "kspace"]
    # the reference itself, degraded back through the chain, is the LR input exactly
    value, used = lr_consistency_psnr(hr, lr, data_range=float(hr.max() - hr.min()))
    assert math.isinf(value) and used["steps"] == deg["steps"]
    # a prediction that differs from the reference scores finite, and lower than the perfect one
    noisy = hr + 5.0 * (hr > 0)
    assert 0 < lr_consistency_psnr(noisy, lr, data_range=float(hr.max() - hr.min()))[0] < 100


def test_one_step_degradation_is_unchanged(hr):
    lr = medgan.degrade(hr, 2, method="interpolate")
    deg = degradation_of(lr, tuple(hr.shape[1:]))
    assert deg["factor"] == (2, 2, 2) and "steps" not in deg
    assert math.isinf(lr_consistency_psnr(hr, lr, data_range=1.0)[0])


def test_evaluate_scores_lr_consistency_of_a_two_step_lr(hr):
    lr = medgan.degrade(medgan.degrade(hr, (1, 1, 2), method="thick_slice"), (2, 2, 1), method="interpolate")
    up = medgan.interpolate(lr, (2, 2, 2), order=3)
    result = medgan.evaluate(up, hr, lr=lr)
    assert 20 < result["lr_consistency_psnr"] < 80


def test_an_assumed_degradation_is_warned_about_naming_the_option(hr, caplog, fresh_warnings):
    """An LR input without a degradation record is scored as if ``"interpolate"`` made it: a thick-slice LR read as a
    plain array scored several dB lower than with its record, and nothing but ``source: "assumed"`` said why. Now a
    WARNING names the input, the assumed method and factor, and how to give the degradation (``degradation=``,
    ``--degradation`` on the command line); a recorded or given degradation is not warned about."""
    lr = medgan.degrade(hr, (1, 1, 4), method="thick_slice")
    pred = medgan.interpolate(lr, (1, 1, 4))
    dr = float(hr.max() - hr.min())
    with caplog.at_level("WARNING", logger="medgan"):
        recorded, _ = lr_consistency_psnr(pred, lr, data_range=dr)
        given, deg = lr_consistency_psnr(pred, lr.numpy(), data_range=dr, degradation="thick_slice")
    assert deg["source"] == "argument" and given == pytest.approx(recorded, abs=1e-9)
    assert not [r for r in caplog.records if "degradation" in r.getMessage()]

    with caplog.at_level("WARNING", logger="medgan"):
        assumed, deg = lr_consistency_psnr(pred, lr.numpy(), data_range=dr)
        lr_consistency_psnr(pred + 1.0, lr.numpy(), data_range=dr)  # the same input again: said once
    assert deg == {"method": "interpolate", "factor": (1, 1, 4), "source": "assumed"}
    assert assumed < recorded - 1.0  # what the warning is about: the wrong degradation costs dB
    said = [r.getMessage() for r in caplog.records if "records no degradation" in r.getMessage()]
    assert len(said) == 1
    assert "'interpolate'" in said[0] and "1,1,4" in said[0]
    assert "degradation=" in said[0] and "--degradation" in said[0]

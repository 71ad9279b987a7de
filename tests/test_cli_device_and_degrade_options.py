"""Command-line options that were accepted and then failed late or did nothing (review round 26):

* ``--device gpu`` of ``upscale`` / ``synthesize`` is a bad value: a usage error (exit 2) in the command line's own
  words, before any file is read (it was exit 1 after loading, naming Python's ``None / 'auto'``); a well-formed
  device this machine lacks stays exit 1.
* ``medgan degrade``: ``--slice-profile`` with a method that has none and ``--noise`` without ``--noise-std`` are
  usage errors (exit 2; both were ignored with exit 0); ``--seed`` without noise warns that it has no effect.
* The Rician refusal names the command line's ``--noise gaussian``, not only the Python spelling.

Real data: sample_data/nifti/nibabel/anatomical.nii (negative values: Rician noise is refused on it) and a crop of
the MNI ICBM152 T1 template.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_t1_path

from pipelines import cli

ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"


def _exit(argv: list[str]) -> int:
    """``medgan ARGV``'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture()
def t1(tmp_path):
    from medgan import load_scan, save_scan

    return save_scan(load_scan(mni_t1_path())[:, 40:88, 60:108, 60:84], tmp_path / "t1.nii.gz")


# --------------------------------------------------------------------------------------------------- --device
@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x", "0", ""])
def test_upscale_device_of_a_bad_form_is_a_usage_error_in_cli_words(tmp_path, capsys, device):
    out = tmp_path / "up.nii.gz"
    assert _exit(["upscale", ANATOMICAL, out, "--device", device]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is not a device; use auto" in err and "None" not in err, err
    assert not out.exists()


def test_synthesize_device_of_a_bad_form_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "s.nii.gz"
    argv = ["synthesize", "--model", "brain-t1-tissue-2d", "--labels", ANATOMICAL, "--out", out, "--device", "gpu"]
    assert _exit(argv) == cli.EXIT_USAGE
    assert "'gpu' is not a device" in capsys.readouterr().err
    assert not out.exists()


def test_batch_upscale_device_of_a_bad_form_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["batch", "upscale", str(SAMPLE_DATA / "nifti" / "nibabel"), out, "--device", "gpu"]
    assert _exit(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'gpu' is not a device; use auto" in err and "None" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("device", ["auto", "CPU", " cpu", "cuda", "cuda:1"])
def test_well_formed_devices_parse(device):
    # whether this machine has the device is not the parser's to say (another machine may run the command)
    args = cli.build_parser().parse_args(["upscale", "in.nii.gz", "out.nii.gz", "--device", device])
    assert args.device == device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_stays_a_run_failure(tmp_path, capsys):
    out = tmp_path / "up.nii.gz"
    assert _exit(["upscale", ANATOMICAL, out, "--device", "cuda"]) == cli.EXIT_FAILED
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ degrade options
def test_slice_profile_without_thick_slice_is_a_usage_error(t1, tmp_path, capsys):
    out = tmp_path / "low.nii.gz"
    for method in ("kspace", "interpolate"):
        argv = ["degrade", t1, out, "--factor", "2", "--method", method, "--slice-profile", "gaussian"]
        assert _exit(argv) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert "--slice-profile applies only with --method thick_slice" in err and err.count("\n") == 1, err
        assert not out.exists()
    # with thick_slice it is used and recorded
    argv = ["degrade", t1, out, "--factor", "1,1,2", "--method", "thick_slice", "--slice-profile", "gaussian"]
    assert _exit(argv) == cli.EXIT_OK
    assert json.loads(out.with_suffix("").with_suffix(".json").read_text())["degradation"]["slice_profile"] == (
        "gaussian"
    )


def test_noise_model_without_noise_std_is_a_usage_error(t1, tmp_path, capsys):
    out = tmp_path / "low.nii.gz"
    assert _exit(["degrade", t1, out, "--factor", "2", "--noise", "rician"]) == cli.EXIT_USAGE
    assert "--noise needs --noise-std" in capsys.readouterr().err
    assert not out.exists()
    # an explicit level of 0 is a level (a sweep over --noise-std 0, 5, 10 keeps working): no noise, recorded so
    assert _exit(["degrade", t1, out, "--factor", "2", "--noise", "rician", "--noise-std", "0"]) == cli.EXIT_OK
    assert json.loads(out.with_suffix("").with_suffix(".json").read_text())["degradation"]["noise"] is None


def test_seed_without_noise_warns_that_it_has_no_effect(t1, tmp_path, caplog):
    from medgan import load_scan

    caplog.set_level(logging.WARNING, logger="pipelines.commands.degrade")
    seeded, plain = tmp_path / "seeded.nii.gz", tmp_path / "plain.nii.gz"
    assert _exit(["degrade", t1, seeded, "--factor", "2", "--seed", "7"]) == cli.EXIT_OK
    warned = [r.getMessage() for r in caplog.records if r.name == "pipelines.commands.degrade"]
    assert len(warned) == 1 and "--seed 7 has no effect" in warned[0], warned
    caplog.clear()
    assert _exit(["degrade", t1, plain, "--factor", "2"]) == cli.EXIT_OK
    assert not [r for r in caplog.records if r.name == "pipelines.commands.degrade"]
    np.testing.assert_array_equal(load_scan(seeded).numpy(), load_scan(plain).numpy())  # indeed no effect


def test_rician_refusal_names_the_command_line_option(tmp_path, capsys):
    out = tmp_path / "low.nii.gz"
    argv = ["degrade", ANATOMICAL, out, "--factor", "2", "--noise", "rician", "--noise-std", "5"]
    assert _exit(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Rician noise needs a magnitude" in err and "--noise gaussian" in err and err.count("\n") == 1, err
    assert not out.exists()

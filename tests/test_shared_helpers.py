"""Shared helpers: one factor parser, one method-name check, one spacing rule, one file hash.

The behaviour changes that sharing them brought (a recorded factor of 2.5 was truncated to 2 in evaluation;
``--factor 2x2`` was refused by the command line though the library reads it) and the shared helpers themselves.
"""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.data.degrade import DegradationError, parse_factor
from medgan.errors import EvaluationError, MedganError
from medgan.eval.compare import BASELINES, evaluate_paths, upsampling_factor
from medgan.io.scan import make_scan, spacing_from_affine
from medgan.models.generators import MAX_FACTOR, normalize_factor
from pipelines import cli


@pytest.fixture(scope="module")
def small_t1(tmp_path_factory):
    """A 20 x 24 x 16 crop of the MNI T1 (real voxels, its own affine) as a NIfTI file."""
    img = nib.load(mni_t1_path())
    data = np.asarray(img.dataobj[60:80, 80:104, 80:96], dtype=np.float32)
    affine = img.affine @ np.array([[1, 0, 0, 60], [0, 1, 0, 80], [0, 0, 1, 80], [0, 0, 0, 1.0]])
    path = tmp_path_factory.mktemp("t1") / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


# --------------------------------------------------------------------------- item 3: one factor parser


def test_a_recorded_factor_of_2_5_is_unknown_not_truncated_to_2():
    """``_factor_of`` did ``int(2.5) == 2``: evaluation took a sidecar's 2.5 for x2 while degrade refused it."""
    pred = make_scan(np.zeros((1, 8, 8, 8)), np.eye(4), {"medgan": {"factor": [2.5, 2.5, 2.5]}})
    assert upsampling_factor(pred) is None
    pred.meta["medgan"]["factor"] = [2, 2, 2]
    assert upsampling_factor(pred) == (2, 2, 2)
    pred.meta["medgan"]["factor"] = 2
    assert upsampling_factor(pred) == (2, 2, 2)


@pytest.mark.parametrize("value", [[2.5, 2.5, 2.5], 2.5, [True, True, True], True, b"22", [2, 2], [0, 2, 2], None])
def test_parse_factor_refuses_what_is_not_whole_numbers_per_axis(value):
    with pytest.raises(DegradationError) as info:
        parse_factor(value, 3)
    assert isinstance(info.value, MedganError) and isinstance(info.value, ValueError)


def test_parse_factor_reads_text_whole_floats_and_one_entry_for_every_axis():
    assert parse_factor("2x2", 2) == (2, 2)
    assert parse_factor("1X1x4", 3) == (1, 1, 4)
    assert parse_factor([2.0, 2.0, 1.0], 3) == (2, 2, 1)  # JSON may hold whole floats
    assert parse_factor([2], 3) == (2, 2, 2)
    assert parse_factor(np.int64(3), 2) == (3, 3)
    assert parse_factor("1,1,4", None) == (1, 1, 4)  # no axis count: as given
    assert parse_factor(2, None) == (2,)


def test_normalize_factor_is_parse_factor_plus_its_cap():
    assert normalize_factor([2.0, 2.0], 2) == (2, 2) == parse_factor([2.0, 2.0], 2)
    assert normalize_factor([4], 3) == (4, 4, 4)
    for bad in ([2.5, 2.5], True, "22", [2, 2, 2]):
        with pytest.raises(ValueError):
            normalize_factor(bad, 2)
    with pytest.raises(ValueError, match=f"at most {MAX_FACTOR}"):
        normalize_factor([1, MAX_FACTOR + 1], 2)


def test_the_command_line_takes_the_factor_forms_the_library_takes(small_t1, tmp_path):
    """``medgan degrade --factor 1x2x2`` was an argparse error although ``medgan.degrade(scan, "1x2x2")`` works."""
    out = tmp_path / "lr.nii.gz"
    assert cli.main(["degrade", str(small_t1), str(out), "--factor", "1x2x2"]) == 0
    assert nib.load(out).shape[:3] == (20, 12, 8)
    expected = medgan.degrade(medgan.load_scan(small_t1), "1x2x2")
    np.testing.assert_allclose(np.asarray(nib.load(out).dataobj, np.float32), expected.numpy()[0], atol=1e-3)


@pytest.mark.parametrize("text", ["2.5", "0", "2,0", "a", ""])
def test_a_bad_command_line_factor_is_a_usage_error(small_t1, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as exc:
        cli.main(["degrade", str(small_t1), str(tmp_path / "lr.nii.gz"), "--factor", text])
    assert exc.value.code == 2
    assert "argument --factor: factor" in capsys.readouterr().err
    assert not (tmp_path / "lr.nii.gz").exists()


# --------------------------------------------------------------------------- item 5: CLI checks in one place


def test_a_method_named_like_a_baseline_is_refused_by_one_check(small_t1, tmp_path, capsys):
    from medgan.eval.compare import check_method_name

    for name in BASELINES:
        check_method_name(name, with_lr=False)  # no LR input, no baselines: any name
        with pytest.raises(EvaluationError, match=f"--method {name!r} is the name of an interpolation baseline"):
            check_method_name(name, with_lr=True)
    with pytest.raises(EvaluationError, match="interpolation baseline"):
        evaluate_paths(small_t1, small_t1, small_t1, method="linear")
    args = ["evaluate", "--pred", str(small_t1), "--ref", str(small_t1), "--lr", str(small_t1)]
    assert cli.main([*args, "--out", str(tmp_path / "o"), "--method", "cubic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgan evaluate: error: --method 'cubic' is the name of an interpolation baseline")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--max-montages", "-1"), ("--data-range", "0"), ("--data-range", "nan")]
)
def test_evaluate_options_are_checked_by_argparse_in_both_commands(small_t1, tmp_path, capsys, option, value):
    commands = [
        ["evaluate", "--pred", str(small_t1), "--ref", str(small_t1), "--out", str(tmp_path / "o")],
        ["batch", "evaluate", str(tmp_path), str(tmp_path), str(tmp_path / "o")],
    ]
    for args in commands:
        with pytest.raises(SystemExit) as exc:
            cli.main([*args, option, value])
        assert exc.value.code == 2
        assert f"argument {option}: {value!r} must be" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- items 6, 7, 10, 12


def test_spacing_from_affine_is_the_column_norms():
    img = nib.load(mni_t1_path())
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 1.1, 2.5])
    assert spacing_from_affine(affine) == pytest.approx((0.9, 1.1, 2.5))
    assert spacing_from_affine(img.affine) == pytest.approx(tuple(img.header.get_zooms()[:3]))
    assert spacing_from_affine(np.diag([0.5, 2.0, 1.0])) == pytest.approx((0.5, 2.0))  # a 2-D image's 3x3


def test_one_file_sha256_for_checkpoints_and_batch_outputs(small_t1, tmp_path):
    from medgan.infer.checkpoint import file_sha256
    from pipelines.batch.manifest import output_sha256

    expected = hashlib.sha256(small_t1.read_bytes()).hexdigest()
    assert file_sha256(small_t1) == output_sha256(small_t1) == expected
    big = tmp_path / "big.bin"  # more than one 1 MiB chunk
    big.write_bytes(np.random.default_rng(0).bytes(3 * (1 << 20) + 17))
    assert output_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()

"""The `medgan` console script: version, help, usage errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medgan import __version__
from pipelines import cli
from tests.conftest import REPO


def test_version_flag_prints_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"medgan {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == cli.EXIT_USAGE
    assert "usage: medgan" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == cli.EXIT_USAGE


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_verbose_shows_medgans_debug_lines_not_every_librarys(tmp_path, mni_t1):
    """``-v`` set the root logger to DEBUG: ``medgan -v evaluate`` printed some 250 lines of matplotlib font
    scanning and pylibjpeg plug-in probing around medgan's own few. Only medgan's loggers follow -v now; other
    libraries speak from WARNING (and torch's INFO lines at exit no longer show without -v either)."""
    import nibabel as nib
    import numpy as np

    img = nib.load(mni_t1).slicer[70:110, 90:130, 80:92]
    ref = tmp_path / "scans" / "ref.nii.gz"
    ref.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine), ref)
    (ref.parent / "notes.bin").write_bytes(b"not a scan")  # discovery says so at DEBUG level
    cmd = [sys.executable, "-m", "pipelines.cli", "-v", "evaluate", "--pred", str(ref.parent), "--ref", str(ref)]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "out"), "--max-montages", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    levels_and_names = [line.split(":")[0].split() for line in done.stderr.splitlines() if ":" in line]
    names = {parts[1] for parts in levels_and_names if len(parts) == 2 and parts[0] in ("DEBUG", "INFO")}
    assert names and all(n.split(".")[0] in ("medgan", "pipelines") for n in names), sorted(names)
    assert any(parts == ["DEBUG", "medgan.io.discover"] for parts in levels_and_names), done.stderr


def test_every_registered_command_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no sub-command registered"
    for name, subparser in sub.choices.items():
        assert subparser.format_help().startswith(f"usage: medgan {name}")


# --------------------------------------------------------------------------- medgan upscale --windows


@pytest.fixture(scope="module")
def t1_crop_path(tmp_path_factory, mni_t1):
    """A real 52x32x12 crop of the shipped MNI T1 (brain): wider than the 48^3 window of ``brain-mr-x2-3d`` along
    x, so the checkpoint layout stitches two windows while the fitted layout covers the crop with one."""
    import nibabel as nib
    import numpy as np

    img = nib.load(mni_t1).slicer[70:122, 90:122, 84:96]
    path = tmp_path_factory.mktemp("cli-windows") / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)
    return path


def test_upscale_windows_checkpoint_matches_the_default_fit_layout(tmp_path, t1_crop_path):
    import json

    import numpy as np

    import medgan

    base = ["upscale", str(t1_crop_path)]
    default, ckpt = tmp_path / "default.nii.gz", tmp_path / "ckpt.nii.gz"
    assert cli.main([*base, str(default), "--model", "brain-mr-x2-3d", "--device", "cpu"]) == 0
    assert cli.main([*base, str(ckpt), "--model", "brain-mr-x2-3d", "--device", "cpu", "--windows", "checkpoint"]) == 0
    assert json.loads((tmp_path / "default.json").read_text())["windows"] == "fit"
    assert json.loads((tmp_path / "ckpt.json").read_text())["windows"] == "checkpoint"
    b, a = medgan.load_scan(default), medgan.load_scan(ckpt)
    assert a.shape == b.shape == (1, 104, 64, 24)
    np.testing.assert_allclose(np.asarray(b.affine), np.asarray(a.affine))
    x, y = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    # stitched windows: the layout does not change the voxels beyond rounding (the NIfTI stores float32)
    assert np.max(np.abs(x - y)) <= 1e-3 * (x.max() - x.min())


@pytest.mark.parametrize("command", [["upscale"], ["batch", "upscale"]])
def test_bad_windows_value_is_a_usage_error(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "in.nii.gz", str(tmp_path / "out"), "--model", "brain-mr-x2-3d", "--windows", "whole"])
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--windows" in err and "invalid choice: 'whole'" in err
    assert not (tmp_path / "out").exists()


def test_upscale_without_model_uses_the_default_and_bad_adapt_steps_is_a_usage_error(tmp_path, t1_crop_path, capsys):
    """The contract shows ``--model`` as optional: the default is the shipped 3-D x2 model."""
    import json

    out = tmp_path / "sr.nii.gz"
    assert cli.main(["upscale", str(t1_crop_path), str(out), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "sr.json").read_text())["model"] == "brain-mr-x2-3d"
    with pytest.raises(SystemExit) as exc:
        cli.main(["upscale", str(t1_crop_path), str(tmp_path / "z.nii.gz"), "--adapt-steps", "-1"])
    assert exc.value.code == cli.EXIT_USAGE
    assert "--adapt-steps" in capsys.readouterr().err and not (tmp_path / "z.nii.gz").exists()
    with pytest.raises(SystemExit) as exc:  # was a traceback-free exit 1 only after loading the scan and model
        cli.main(["upscale", str(t1_crop_path), str(tmp_path / "z.nii.gz"), "--adapt-steps", "2", "--adapt-seed", "-1"])
    assert exc.value.code == cli.EXIT_USAGE
    assert "--adapt-seed" in capsys.readouterr().err and not (tmp_path / "z.nii.gz").exists()


# --------------------------------------------------------------------------- train-sr / train-cgan example configs


def test_example_train_configs_write_their_runs_outside_the_package():
    """Every example config of ``medgan train-sr`` / ``train-cgan`` (medgan/train/configs/) writes its run into the
    repository's ``runs/`` (ignored by git), as the shipped models' configs do; ``out_dir: runs/...`` wrote into
    the installed package (medgan/train/configs/runs/)."""
    from pathlib import Path

    from medgan.train.cgan_config import load_cgan_config
    from medgan.train.config import load_config

    repo = Path(__file__).resolve().parents[1]
    configs = sorted((repo / "medgan" / "train" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        load = load_cgan_config if path.name.startswith("cgan_") else load_config
        out_dir = Path(load(path)["out_dir"]).resolve()
        assert out_dir.parent == repo / "runs", (path.name, out_dir)


def test_a_folder_tree_with_a_file_name_as_out_is_a_usage_error(tmp_path, capsys):
    """``medgan upscale TREE out.nii.gz`` ran a batch into a folder named out.nii.gz."""
    from pathlib import Path

    tree = Path(__file__).resolve().parents[1] / "sample_data" / "dicom"
    assert cli.main(["upscale", str(tree), str(tmp_path / "out.nii.gz")]) == cli.EXIT_USAGE
    assert "OUT must be a folder" in capsys.readouterr().err and not (tmp_path / "out.nii.gz").exists()


def test_synthesize_log_line_names_every_file_written(tmp_path, caplog):
    """``medgan synthesize -n 2 --out syn.nii.gz`` logged "wrote 2 synthetic file(s) ...: syn_000.nii.gz", naming
    only the first of the two files it wrote."""
    import logging

    import numpy as np

    import medgan
    from medgan.data.labels import tissue_labels
    from medgan.io.scan import make_scan

    mni = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
    labels = tissue_labels(medgan.load_scan(mni / "gm.nii.gz"), medgan.load_scan(mni / "wm.nii.gz"))
    crop = labels[:, 40:104, 60:124, 80]  # a real 64 x 64 axial label slice keeps the test fast
    medgan.save_scan(make_scan(crop.numpy(), np.asarray(labels.affine)), tmp_path / "labels.nii.gz")
    out = tmp_path / "syn.nii.gz"
    args = ["--model", "brain-t1-tissue-2d", "--labels", str(tmp_path / "labels.nii.gz"), "--scalar", "0.5"]
    caplog.set_level(logging.INFO, logger="pipelines.commands.synthesize")
    assert cli.main(["synthesize", *args, "-n", "2", "--seed", "0", "--out", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.glob("syn_*.nii.gz"))
    assert written == ["syn_000.nii.gz", "syn_001.nii.gz"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pipelines.commands.synthesize"]
    assert line.startswith("wrote 2 synthetic file(s) (seed 0)") and all(name in line for name in written), line

"""Progress and summaries of the inference commands, from a first-use review (round 22).

* ``medgan upscale`` / ``medgan synthesize`` show their bar by default when stderr is a terminal (a single
  128^3 scan ran 85 s with no sign of life), not in a pipe or a log; ``--no-progress`` turns it off. The terminal
  is a real pseudo-terminal (``os.openpty``) attached to the stderr of a real ``medgan`` process.
* ``medgan upscale TREE OUT`` says ``scan k/N`` as each scan finishes.
* The README's exit-status rule is the one the commands follow.
* ``medgan evaluate --lr`` ends with the mean PSNR gain over cubic interpolation, the number of the report.

Real data: crops of the MNI ICBM152 T1 template and its tissue maps in sample_data/; the models are tiny untrained
checkpoints written with the real save API.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import cli_env, mni_label_map, mni_t1_path, save_tiny_sr, save_tiny_synthesizer

import medgan
from medgan.io.scan import make_scan
from pipelines.cli import main as cli_main

README = Path(__file__).resolve().parents[1] / "README.md"
#: what tqdm draws for a bar: "NN%|" then the bar, then "k/N"
BAR = re.compile(r"\d+%\|.*\| *\d+/\d+")


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("models") / "sr.safetensors")


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    return save_tiny_synthesizer(tmp_path_factory.mktemp("models") / "synth.safetensors")


def _t1_crop(path: Path, corner: tuple[int, int, int], size: tuple[int, int, int] = (24, 24, 8)) -> Path:
    """A real crop of the MNI T1 template (head tissue, so a model has something to upscale)."""
    img = nib.load(mni_t1_path())
    box = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
    crop = img.slicer[box]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(crop.dataobj, dtype=np.float32), crop.affine), path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return _t1_crop(tmp_path_factory.mktemp("scan") / "t1.nii.gz", (80, 100, 70))


def _medgan(args: list, *, tty: bool) -> tuple[int, str]:
    """Run ``python -m pipelines.cli ARGS``; its stderr a pseudo-terminal (``tty``) or a pipe. Returns the exit
    status and what it wrote on stderr."""
    command = [sys.executable, "-m", "pipelines.cli", *map(str, args)]
    if not tty:
        done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=240)
        return done.returncode, done.stderr
    master, slave = os.openpty()
    # 24 rows x 100 columns, as a terminal window has: a new pty reports 0 columns, where tqdm draws nothing
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            command, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave
        )
    finally:
        os.close(slave)  # the child holds its own copy: the read below ends when the child closes it
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal has gone (Linux)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=240), b"".join(chunks).decode(errors="replace")


def test_upscale_shows_a_bar_on_a_terminal_by_default(scan, tiny_sr, tmp_path):
    code, err = _medgan(["upscale", scan, tmp_path / "sr.nii.gz", "--model", tiny_sr], tty=True)
    assert code == 0, err
    assert BAR.search(err) and "window" in err, err  # the bar over the windows
    assert nib.load(tmp_path / "sr.nii.gz").shape == (48, 48, 8)


def test_upscale_no_progress_and_no_terminal_show_no_bar(scan, tiny_sr, tmp_path):
    code, err = _medgan(["upscale", scan, tmp_path / "a.nii.gz", "--model", tiny_sr, "--no-progress"], tty=True)
    assert code == 0, err
    assert not BAR.search(err) and "%|" not in err, err
    # a pipe (CI, a log file): no bar by default, as before
    code, err = _medgan(["upscale", scan, tmp_path / "b.nii.gz", "--model", tiny_sr], tty=False)
    assert code == 0, err
    assert "%|" not in err and "wrote" in err, err
    # --progress forces it on in a pipe
    code, err = _medgan(["upscale", scan, tmp_path / "c.nii.gz", "--model", tiny_sr, "--progress"], tty=False)
    assert code == 0, err
    assert BAR.search(err), err


def test_progress_and_no_progress_together_are_a_usage_error(scan, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_main(["upscale", str(scan), str(tmp_path / "x.nii.gz"), "--progress", "--no-progress"])
    assert exc.value.code == 2 and not (tmp_path / "x.nii.gz").exists()


def test_synthesize_shows_a_bar_on_a_terminal_by_default(tiny_synth, tmp_path):
    labels = mni_label_map(tmp_path / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 79)))
    args = ["synthesize", "--model", tiny_synth, "--labels", labels, "--seed", "1"]
    code, err = _medgan([*args, "--out", tmp_path / "s.nii.gz"], tty=True)
    assert code == 0, err
    assert BAR.search(err) and "slice" in err, err  # the 2-D model runs the 3 slices: a bar over slices
    code, err = _medgan([*args, "--out", tmp_path / "t.nii.gz", "--no-progress"], tty=True)
    assert code == 0, err
    assert "%|" not in err, err
    code, err = _medgan([*args, "--out", tmp_path / "u.nii.gz"], tty=False)
    assert code == 0, err
    assert "%|" not in err, err


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "in"
    _t1_crop(root / "a" / "t1.nii.gz", (80, 100, 70))
    _t1_crop(root / "b" / "t1.nii.gz", (60, 90, 60))
    return root


def test_upscale_tree_counts_the_scans(tree, tiny_sr, tmp_path):
    """``--progress`` in a pipe: a ``scan k/N`` line per finished scan (the run log has them too)."""
    out = tmp_path / "out"
    code, err = _medgan(["upscale", tree, out, "--model", tiny_sr, "--progress"], tty=False)
    assert code == 0, err
    assert re.search(r"scan 1/2 \S+: done in ", err) and re.search(r"scan 2/2 \S+: done in ", err), err
    log = (out / "medgan.log").read_text()
    assert "scan 1/2 " in log and "scan 2/2 " in log


def test_upscale_tree_shows_a_bar_over_scans_on_a_terminal(tree, tiny_sr, tmp_path):
    code, err = _medgan(["upscale", tree, tmp_path / "out", "--model", tiny_sr], tty=True)
    assert code == 0, err
    assert re.search(r"upscale: +100%\|.*\| *2/2 .*scan", err), err
    assert "scan 2/2 " in err  # the per-scan lines, written above the bar


def test_readme_exit_status_rule_is_what_the_commands_do(scan, tree, tmp_path, capsys):
    """The README's rule: 2 for the command line (including an option that does not fit the kind of input), 1 for
    the files."""
    text = " ".join(README.read_text().split())
    rule = text[text.index("Exit status:") :]
    rule = rule[: rule.index("Errors print one line")]
    two, one = rule[rule.index("2 is for") : rule.index("1 is for")], rule[rule.index("1 is for") :]
    assert "`--factor 2,2` for a 3-D scan" in two and "inside the input tree" in one
    # a factor of 2 axes for a 3-D scan
    assert cli_main(["degrade", str(scan), str(tmp_path / "lr.nii.gz"), "--factor", "2,2"]) == 2
    assert not (tmp_path / "lr.nii.gz").exists()
    # an output tree inside the input tree
    assert cli_main(["upscale", str(tree), str(tree / "out")]) == 1
    assert not (tree / "out").exists() or not any((tree / "out").iterdir())
    capsys.readouterr()


def _stand_in(ref, lr):
    """Cubic interpolation of ``lr`` moved halfway to the truth: better than cubic by construction."""
    cubic = medgan.interpolate(lr, 2, order=3)
    pred = cubic + 0.5 * (ref - cubic)
    meta = {k: v for k, v in ref.meta.items() if k not in ("affine", "original_affine")}
    return make_scan(np.asarray(pred.detach().numpy()), np.asarray(ref.affine), meta)


def test_evaluate_summary_gives_the_gain_over_cubic(tmp_path, capsys):
    root = tmp_path / "eval"
    for name, corner in (("a", (60, 80, 60)), ("b", (80, 100, 70))):
        src = _t1_crop(tmp_path / "src" / f"{name}.nii.gz", corner, (32, 32, 16))
        ref = medgan.load_scan(src)
        lr = medgan.degrade(ref, 2)
        for kind, image in (("ref", ref), ("lr", lr), ("pred", _stand_in(ref, lr))):
            (root / kind).mkdir(parents=True, exist_ok=True)
            medgan.save_scan(image, root / kind / f"{name}.nii.gz")
    base = ["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref")]
    assert cli_main([*base, "--lr", str(root / "lr"), "--out", str(tmp_path / "o")]) == 0
    line = capsys.readouterr().out
    found = re.search(r"mean gain over cubic ([+-]\d+\.\d\d) dB", line)
    assert found, line
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    paired = next(x for x in doc["paired"] if x["baseline"] == "cubic" and x["metric"] == "psnr")
    assert found.group(1) == f"{paired['mean_diff']:+.2f}" and float(found.group(1)) > 0  # the report's number
    # without --lr there is no baseline to gain over
    assert cli_main([*base, "--out", str(tmp_path / "p")]) == 0
    assert "gain over" not in capsys.readouterr().out

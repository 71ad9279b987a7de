"""``medgan info MODEL.safetensors``: a medgan checkpoint prints its model card (``--json``: a metadata summary).

It said "not a DICOM file (no DICM marker...)" for the model a user had just trained.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from medgan.infer.checkpoint import file_sha256, load_checkpoint
from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card
from pipelines import cli
from tests.conftest import save_tiny_sr

SHIPPED = PRETRAINED_DIR / "brain-mr-x2-3d.safetensors"


def test_shipped_model_prints_its_card(capsys):
    assert cli.main(["info", str(SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert "DICM" not in out + err
    assert out.startswith("# brain-mr-x2-3d\n")
    assert out.rstrip("\n") == render_model_card(SHIPPED).rstrip("\n")
    assert "| task | super-resolution |" in out
    assert f"| file sha256 | `{file_sha256(SHIPPED)}` |" in out


def test_shipped_model_json_summary(capsys):
    assert cli.main(["info", str(SHIPPED), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = load_checkpoint(SHIPPED).metadata
    assert summary["kind"] == "medgan-checkpoint" and summary["name"] == "brain-mr-x2-3d"
    assert summary["task"] == "super-resolution" and summary["spatial_dims"] == 3
    assert summary["factor"] == meta["factor"] and summary["modality"] == meta["modality"]
    assert summary["sha256"] == file_sha256(SHIPPED)
    assert summary["metadata"]["model"] == meta["model"]


def test_users_saved_checkpoint_prints_its_card_and_json(tmp_path, capsys):
    """The user's own ``model.safetensors`` (saved with the real checkpoint API), also renamed without suffix."""
    path = save_tiny_sr(tmp_path / "out" / "model.safetensors")
    n_params = sum(int(t.numel()) for t in load_checkpoint(path).state_dict.values())

    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# model\n") and f"| parameters | {n_params:,} |" in out
    assert "| factor (per axis) | (2, 2, 1) |" in out

    assert cli.main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"] == n_params and summary["factor"] == [2, 2, 1]
    assert summary["metadata"]["model"]["arch"] == "srresnet" and summary["path"] == str(path)

    bare = tmp_path / "model_copy"  # the safetensors header's medgan format tag, not the suffix, tells
    shutil.copy(path, bare)
    assert cli.main(["info", str(bare)]) == 0
    assert f"| file sha256 | `{file_sha256(bare)}` |" in capsys.readouterr().out


def test_foreign_or_modified_safetensors_is_a_one_line_error(tmp_path, capsys):
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    assert cli.main(["info", str(foreign)]) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "not a medgan checkpoint" in err and str(foreign) in err and "DICM" not in err

    edited = save_tiny_sr(tmp_path / "edited.safetensors")
    data = bytearray(edited.read_bytes())
    data[-1] ^= 0xFF  # a weight's last byte: the tensors no longer match the stored hash
    edited.write_bytes(bytes(data))
    for extra in ([], ["--json"]):
        assert cli.main(["info", str(edited), *extra]) == cli.EXIT_FAILED
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and "sha256" in err


class _Trap:
    """Unpickling this writes a marker file: the proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickle_named_safetensors_is_refused_unopened(tmp_path, capsys):
    marker = tmp_path / "marker"
    trap = tmp_path / "model.safetensors"
    trap.write_bytes(pickle.dumps(_Trap(marker)))
    assert cli.main(["info", str(trap)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "not a medgan checkpoint" in err and len(err.strip().splitlines()) == 1


def test_info_reads_the_checkpoint_once(tmp_path):
    """``medgan info MODEL`` verified one read of the file and rendered the card from a second: a file replaced in
    between got the first file's verification and the second file's card. Counted with an audit hook on ``open``."""
    import subprocess
    import sys

    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    script = (
        "import sys\n"
        "opens = []\n"
        "sys.addaudithook(lambda ev, a: opens.append(a[0]) if ev == 'open' and str(a[0]) == sys.argv[1] else None)\n"
        "from pipelines.cli import main\n"
        "code = main(['info', sys.argv[1]])\n"
        "print('OPENS', len(opens), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(model)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "| task | super-resolution |" in run.stdout, run.stdout[:500]
    assert "OPENS 1" in run.stderr, run.stderr[-500:]

"""Review 30 (determinism): what an output and a model card record so that a paper can reproduce them.

The outputs were bitwise reproducible, but their records left out what that depends on: the torch build and device
kind (torch's kernels round differently), the command line and the input's identity (``medgan upscale`` and
``medgan synthesize`` sidecars); the training seed and the torch / Python / platform of a training (model cards).
Under the default bf16 the ``--windows`` layouts differ by up to 3e-3 of the range, which ``--help`` called "the
same output within rounding". All on real data (``sample_data``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pydicom
import torch

import medgan
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card
from medgan.io.dicom_write import derivation_text, operation_key
from medgan.io.digest import file_sha256
from medgan.models.registry import build_generator
from pipelines import cli
from tests.conftest import SAMPLE_DATA

ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
HITACHI = SAMPLE_DATA / "dicom" / "dicom2nifti_hitachi_anatomical_001"  # 4 files, one series
RECORDS = ("runtime", "command", "input_file")


def _sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text(encoding="utf-8"))


def _check_runtime(record: dict, device: str = "cpu") -> None:
    assert record["torch_version"] == torch.__version__
    assert record["python_version"] == platform.python_version()
    assert record["platform"] == platform.platform() and record["device"] == device


def test_upscale_cli_sidecar_records_runtime_command_and_input(tmp_path):
    # the input in a folder named after a patient: neither the folder nor the absolute path may be recorded
    folder = tmp_path / "SMITH_JOHN_123"
    folder.mkdir()
    src = folder / "t1.nii"
    shutil.copy(ANATOMICAL, src)
    out = tmp_path / "sr.nii.gz"
    argv = ["upscale", str(src), str(out), "--precision", "fp32", "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    side = _sidecar(out)
    _check_runtime(side["runtime"])
    assert side["input_file"] == {"name": "t1.nii", "files": 1, "sha256": file_sha256(src)}
    assert side["command"] == "medgan upscale t1.nii sr.nii.gz --precision fp32 --device cpu --no-progress"
    text = json.dumps(side)
    assert "SMITH_JOHN" not in text and str(tmp_path) not in text
    # the one-line descrip stays short: the new records are in the sidecar only
    import nibabel as nib

    descrip = nib.load(out).header["descrip"].tobytes().rstrip(b"\0").decode()
    assert descrip == f"medgan {medgan.__version__} SR model=brain-mr-x2-3d synthetic=False"
    assert "torch" not in descrip and "t1.nii" not in descrip


def test_upscale_cli_dicom_series_records_its_files_and_keeps_the_series_number(tmp_path):
    out = tmp_path / "sr"
    argv = ["upscale", str(HITACHI), str(out), "--model", "brain-mr-x2-2d", "--precision", "fp32", "--no-progress"]
    assert cli.main(argv) == 0
    files = sorted(HITACHI.glob("*.dcm"))
    assert len(files) == 4
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(out.glob("*.dcm"))]
    # the DICOM private record holds the provenance as JSON: read it back from the output's meta
    high = medgan.load_scan(out)
    prov = high.meta.get("medgan")
    assert isinstance(prov, dict), sorted(high.meta)
    record = prov["input_file"]
    # the series' files: sha256 of their sha256 digests, sorted, one per line (sha256sum ... | cut | sort | sha256sum)
    lines = "".join(f"{d}\n" for d in sorted(file_sha256(f) for f in files))
    assert record["files"] == 4 and record["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert record["name"] == medgan.load_scan(HITACHI).meta["scan_id"]  # discovery's cleaned id, no path
    _check_runtime(prov["runtime"])
    assert prov["command"].startswith(f"medgan upscale {record['name']} sr --model brain-mr-x2-2d")
    # a rerun elsewhere (another torch, command spelling, copy of the input) keeps its SeriesNumber: the records are
    # run-only, so the operation key is that of the provenance without them
    meta = {"medgan": prov}
    bare = {"medgan": {k: v for k, v in prov.items() if k not in RECORDS}}
    assert operation_key(meta) == operation_key(bare)
    lib = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32").upscale(
        medgan.load_scan(HITACHI)
    )
    ref = medgan.save_scan(lib, tmp_path / "lib", format="dicom", reference=medgan.load_scan(HITACHI))
    numbers = {int(h.SeriesNumber) for h in headers}
    assert numbers == {int(pydicom.dcmread(f, stop_before_pixels=True).SeriesNumber) for f in ref.glob("*.dcm")}
    assert derivation_text(meta) == derivation_text(bare)  # DerivationDescription unchanged


def test_synthesize_records_runtime_command_and_label_map(tmp_path):
    from medgan.data.labels import tissue_labels
    from medgan.io.scan import make_scan

    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    labels = tissue_labels(medgan.load_scan(mni / "gm.nii.gz"), medgan.load_scan(mni / "wm.nii.gz"))
    crop = labels[:, 40:104, 60:124, 80]  # a real 64 x 64 axial label slice keeps the test fast
    src = medgan.save_scan(make_scan(crop.numpy(), np.asarray(labels.affine)), tmp_path / "labels.nii.gz")
    out = tmp_path / "syn.nii.gz"
    argv = ["synthesize", "--model", "brain-t1-tissue-2d", "--labels", str(src), "--scalar", "0.5", "--seed", "3"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    side = _sidecar(out)
    _check_runtime(side["runtime"])
    assert side["input_file"] == {"name": "labels.nii.gz", "files": 1, "sha256": file_sha256(src)}
    assert side["command"] == (
        "medgan synthesize --model brain-t1-tissue-2d --labels labels.nii.gz --scalar 0.5 --seed 3 --out syn.nii.gz"
    )
    assert side["seed"] == 3


def test_runtime_record_names_the_gpu_kind():
    from medgan.infer.checkpoint import runtime_record

    record = runtime_record(torch.device("cpu"))
    assert record["device"] == "cpu" and record["cuda_version"] == torch.version.cuda
    assert "device" not in runtime_record()  # an export: no device


def _tiny(path: Path, **kwargs) -> Path:
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]}
    return save_checkpoint(path, build_generator(cfg), roi_size=16, **kwargs)


def test_new_export_card_shows_training_seed_and_environment(tmp_path):
    path = _tiny(tmp_path / "mine.safetensors", extra={"train_config": {"seed": 1234}})
    meta = load_checkpoint(path).metadata
    env = meta["environment"]
    assert env["torch_version"] == torch.__version__ and env["python_version"] == platform.python_version()
    card = render_model_card(path)
    assert "| training seed | 1234 |" in card
    assert f"| trained with | torch {torch.__version__}" in card and f"Python {platform.python_version()}" in card
    # without a seed in the metadata the card says so
    assert "| training seed | not recorded |" in render_model_card(_tiny(tmp_path / "plain.safetensors"))


def test_shipped_cards_show_seed_and_say_the_environment_was_not_recorded():
    for path in sorted(PRETRAINED_DIR.glob("*.safetensors")):
        card = render_model_card(path)
        assert "| training seed | 0 |" in card, path.name  # every shipped model trained with seed 0
        assert "| trained with | not recorded (exported before medgan recorded it) |" in card, path.name
        # the shipped card is the renderer's output (and the shipped file was not rewritten: its sha256 matches)
        text = path.with_suffix(".md").read_text(encoding="utf-8")
        assert text.split("<!-- notes -->")[0] == card
        assert f"| file sha256 | `{file_sha256(path)}` |" in text


def test_upscale_help_qualifies_the_windows_claim_under_bf16(capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli.main(["upscale", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "same output within rounding" not in help_text
    assert "bf16" in help_text and "3e-3" in help_text and "fp32" in help_text

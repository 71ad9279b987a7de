"""Hostile inputs of the security review (round 29): non-finite model weights, overflowing models, and a scan
larger than the memory a process can get.

* A checkpoint whose weights hold NaN or inf (hashes recomputed, so it is no tampered file) loaded everywhere, and
  ``medgan upscale`` wrote an all-NaN scan with exit status 0. Every loader now refuses it, naming the tensor.
* A checkpoint with finite weights that overflow float32 on a scan returned NaN voxels (or infinities clipped to the
  scan's maximum): ``SuperResolver.upscale`` now raises.
* A genuine 1200^3 uint8 NIfTI (1.7 MB of gzip, 6.4 GiB as float32) failed under a memory limit as "damaged or
  unsupported header or pixel data (MemoryError)"; the message now says how much memory the scan needs. Run in a
  subprocess under a real address-space limit (``RLIMIT_AS``): the file is never decompressed, so the test costs
  about 2 MB of disk and a few seconds of imports.

Real data: the shipped models' weights and metadata, the MNI T1 template and a DICOM series of ``sample_data/``.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import mni_t1_path
from safetensors import safe_open
from safetensors.torch import save as st_save

import medgan
from medgan import SuperResolver
from medgan.errors import CheckpointError, MedganError, ScanReadError
from medgan.infer.checkpoint import Checkpoint, load_checkpoint, metadata_sha256, payload_sha256, save_checkpoint
from medgan.infer.pretrained import pretrained_path

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- non-finite weights
def _rewritten(name: str, dst: Path, edit) -> Path:
    """The shipped model ``name`` with ``edit(tensors)`` applied, written with its own metadata and recomputed hashes
    (what the reviewer's make_ckpts.py does: a consistent file, not one that fails its sha256 check)."""
    with safe_open(str(pretrained_path(name)), framework="pt", device="cpu") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k).clone() for k in fh.keys()}
    edit(tensors)
    header["payload_sha256"] = payload_sha256(tensors)
    header["metadata_sha256"] = metadata_sha256(header["medgan"])
    dst.write_bytes(st_save(tensors, metadata=header))
    return dst


def _set(tensor_name: str, value: float):
    def edit(tensors):
        tensors[tensor_name].view(-1)[:3] = value  # three values of the tensor, the rest as shipped

    return edit


def _assert_names_tensor(exc: pytest.ExceptionInfo, tensor_name: str) -> None:
    message = str(exc.value)
    assert repr(tensor_name) in message and "3 NaN or infinite value(s)" in message, message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_super_resolution_weights_that_are_not_finite_are_refused_by_every_loader(tmp_path, value):
    bad = _rewritten("brain-mr-x2-2d", tmp_path / "bad.safetensors", _set("head.0.weight", value))
    for load in (load_checkpoint, SuperResolver, lambda p: SuperResolver.from_pretrained(p, device="cpu")):
        with pytest.raises(CheckpointError) as exc:
            load(bad)
        _assert_names_tensor(exc, "head.0.weight")


def test_a_checkpoint_built_in_memory_with_nan_weights_is_refused(tmp_path):
    """A Checkpoint that never was a file (adapted weights, a training run's EMA) is checked when built."""
    shipped = load_checkpoint(pretrained_path("brain-mr-x2-2d"))
    state = {k: v.clone() for k, v in shipped.state_dict.items()}
    _set("body.0.body.2.bias", math.nan)(state)
    ckpt = Checkpoint(path=tmp_path / "in-memory", state_dict=state, metadata=shipped.metadata)
    with pytest.raises(CheckpointError) as exc:
        SuperResolver(ckpt, device="cpu")
    _assert_names_tensor(exc, "body.0.body.2.bias")


def test_synthesis_and_detector_weights_that_are_not_finite_are_refused(tmp_path):
    from medgan.infer.detect import SyntheticDetector, detect_synthetic
    from medgan.infer.synthesis import Synthesizer

    syn = _rewritten("brain-t1-tissue-2d", tmp_path / "syn.safetensors", _set("blocks.0.conv_0.conv.weight", math.nan))
    with pytest.raises(CheckpointError) as exc:
        Synthesizer.from_pretrained(syn, device="cpu")
    _assert_names_tensor(exc, "blocks.0.conv_0.conv.weight")
    det = _rewritten("synthetic-detector", tmp_path / "det.safetensors", _set("net.features.0.weight", math.inf))
    for load in (
        lambda p: SyntheticDetector.from_file(p, device="cpu"),
        lambda p: detect_synthetic(np.ones((1, 32, 32), np.float32), detector=p, device="cpu"),
    ):
        with pytest.raises(CheckpointError) as exc:
            load(det)
        _assert_names_tensor(exc, "net.features.0.weight")


def test_upscale_command_with_nan_weights_fails_and_writes_nothing(tmp_path):
    from pipelines.cli import main

    bad = _rewritten("brain-mr-x2-2d", tmp_path / "bad.safetensors", _set("head.0.weight", math.nan))
    src = tmp_path / "lr.nii.gz"
    t1 = medgan.load_scan(mni_t1_path())
    medgan.save_scan(t1[:, 60:92, 70:102, 78:80], src)
    out = tmp_path / "sr.nii.gz"
    assert main(["upscale", str(src), str(out), "--model", str(bad), "--device", "cpu"]) != 0
    assert not out.exists()


def test_the_shipped_models_still_load():
    for name in ("brain-mr-x2-2d", "brain-mr-x2-3d", "brain-mr-through-plane-x4", "brain-t1-tissue-2d"):
        load_checkpoint(pretrained_path(name)).build_model()


# ---------------------------------------------------------------------------------- finite weights that overflow
@pytest.mark.parametrize(
    ("model", "box"),
    [
        # a 2-D model over a volume: slab by slab (the streaming path)
        ("brain-mr-x2-2d", (slice(60, 92), slice(70, 102), slice(78, 82))),
        # a 3-D model: the whole scan's windows into one output buffer
        ("brain-mr-x2-3d", (slice(60, 84), slice(70, 94), slice(70, 94))),
    ],
    ids=["2d-slabs", "3d-whole"],
)
def test_an_output_that_overflows_is_an_error_not_a_nan_scan(tmp_path, model, box):
    shipped = load_checkpoint(pretrained_path(model))
    state = {k: v.clone() for k, v in shipped.state_dict.items()}
    # each weight finite (1e20 times the shipped ones); their product in two convolutions passes float32's 3.4e38
    state["head.0.weight"] *= 1e20
    state["body.0.body.0.weight"] *= 1e20
    path = save_checkpoint(
        tmp_path / "overflow.safetensors",
        state,
        config=shipped.metadata["model"],
        normalization=shipped.metadata["normalization"],
        modality="MR",
    )
    scan = medgan.load_scan(mni_t1_path())[(slice(None), *box)]
    resolver = SuperResolver(path, device="cpu", precision="fp32")  # finite weights: loaded
    with pytest.raises(MedganError, match="NaN or infinite output for finite input") as exc:
        resolver.upscale(scan)
    assert "numerical overflow" in str(exc.value)


def test_a_scan_with_nan_voxels_is_still_upscaled_by_a_sound_model():
    """The output check concerns the network's input, which is always finite: NaN voxels of the scan keep their NaN
    in the output and are no error."""
    scan = medgan.load_scan(mni_t1_path())[:, 60:92, 70:102, 78:80].clone()
    scan[0, 5, 5, 0] = float("nan")
    y = SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu", precision="fp32").upscale(scan)
    nan = torch.isnan(y)
    assert int(nan.sum()) == 4 and bool(nan[0, 10:12, 10:12, 0].all())  # its own 2x2 block, no other voxel


# ------------------------------------------------------------------------------------------ out of memory
_CHILD = r"""
import json, resource, sys
import medgan
from medgan.errors import MedganError
warm, target, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
medgan.load_scan(warm)  # every lazy import done before the limit (a library mapped under it fails otherwise)
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    out = {"loaded": list(medgan.load_scan(target).shape)}
except MedganError as exc:
    out = {"type": type(exc).__name__, "message": str(exc)}
print(json.dumps({"vm": vm, **out}))
"""


def _load_under_limit(warm: Path, target: Path, headroom: int) -> dict:
    """Load ``target`` in a fresh process whose address space may grow by ``headroom`` bytes after loading ``warm``."""
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(warm), str(target), str(headroom)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _zeros_like_mni(dst: Path, shape: tuple[int, int, int]) -> Path:
    """A genuine NIfTI of ``shape`` uint8 zeros with the MNI T1's header (geometry, units), written in ms: a
    multi-member gzip (RFC 1952, as bgzip writes) of the header and one compressed zero plane repeated per plane.
    Compresses about 1000x, as real label maps and masks with large empty regions do."""
    header = nib.load(mni_t1_path()).header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_slope_inter(1, 0)
    header["vox_offset"] = 352
    plane = gzip.compress(b"\0" * (shape[0] * shape[1]), compresslevel=9, mtime=0)
    dst.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4, mtime=0) + plane * shape[2])
    return dst


@pytest.fixture(scope="module")
def big_nifti(tmp_path_factory) -> Path:
    return _zeros_like_mni(tmp_path_factory.mktemp("big") / "zeros_1200.nii.gz", (1200, 1200, 1200))


needs_rlimit = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux only"
)


def test_the_big_scan_header_is_sound(big_nifti):
    """The file is no header bomb: discovery and ``medgan info`` read it (1.7 MB of gzip for 1.7 GB of voxels)."""
    from medgan.io.nifti import inspect_nifti

    info = inspect_nifti(big_nifti)
    assert info.shape == (1, 1200, 1200, 1200) and big_nifti.stat().st_size < 2_000_000
    assert medgan.discover_scans(big_nifti)[0].usable


@needs_rlimit
def test_a_scan_beyond_the_address_space_limit_is_refused_before_allocating(big_nifti):
    got = _load_under_limit(mni_t1_path(), big_nifti, 64 << 20)
    assert got.get("type") == "ScanReadError", got
    message = got["message"]
    assert "damaged" not in message, message
    assert "needs 6.4 GiB as float32 (shape (1, 1200, 1200, 1200))" in message, message
    assert "more than this process's address-space limit (ulimit -v" in message, message


@needs_rlimit
def test_a_scan_larger_than_the_memory_left_says_so(tmp_path):
    """512 MiB as float32 under a limit that leaves 64 MiB: the allocation fails (MemoryError), named as such."""
    target = _zeros_like_mni(tmp_path / "zeros_512.nii.gz", (512, 512, 512))
    got = _load_under_limit(mni_t1_path(), target, 64 << 20)
    assert got.get("type") == "ScanReadError", got
    message = got["message"]
    assert "damaged" not in message, message
    assert "needs 512.0 MiB as float32 (shape (1, 512, 512, 512))" in message, message
    assert "more than this process could allocate (out of memory)" in message, message


@needs_rlimit
def test_a_dicom_series_larger_than_the_memory_left_says_so():
    """The same for a real DICOM series (a 128x128x96 T1 in one enhanced file, 6 MiB as float32) with 2 MiB left."""
    folder = REPO / "sample_data" / "dicom" / "dcm_qa_xa30_t1w_tfl3d"
    got = _load_under_limit(folder, folder, 2 << 20)
    assert got.get("type") == "ScanReadError", got
    message = got["message"]
    assert "damaged" not in message, message
    assert "needs 6.0 MiB as float32 (shape (1, 128, 128, 96))" in message, message
    assert "more than this process could allocate (out of memory)" in message, message


def test_a_scan_that_fits_is_not_refused():
    """The bound is a hard limit, never the memory free now: the MNI T1 loads whatever else runs."""
    from medgan.io.nifti import check_memory_bound

    check_memory_bound("t1", (1, 155, 192, 161))
    # 4 PiB: more than any machine's RAM and swap (or the address-space limit, checked first, where one is set)
    with pytest.raises(ScanReadError, match="more than this (machine's memory|process's address-space limit)"):
        check_memory_bound("huge", (1, 2**20, 2**20, 2**20))

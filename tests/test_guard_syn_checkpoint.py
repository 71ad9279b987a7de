"""Mutation-killing test for load_checkpoint: a weight stored as integers where the network has floats is refused
(torch's load_state_dict would cast it silently; the dtype-kind check had no test and could be switched off)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medgan.errors import CheckpointError
from medgan.infer.checkpoint import load_checkpoint, metadata_sha256, payload_sha256
from medgan.infer.pretrained import resolve_model_path


def test_integer_weights_in_a_float_slot_are_refused(tmp_path):
    src = resolve_model_path("brain-t1-tissue-2d", task="synthesis")
    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    name = next(k for k, t in sorted(tensors.items()) if t.is_floating_point() and t.ndim == 4)
    tensors[name] = (tensors[name] * 1000).round().to(torch.int64)  # e.g. a quantisation tool's output
    header["payload_sha256"] = payload_sha256(tensors)  # hashes recomputed: a consistent, well-formed file
    meta = json.loads(header["medgan"])
    meta["name"] = "int-weights"  # another model, outside the shipped folder: only the structural checks apply
    header["medgan"] = json.dumps(meta, sort_keys=True)
    header["metadata_sha256"] = metadata_sha256(header["medgan"])
    path = tmp_path / "int-weights.safetensors"
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(CheckpointError, match=rf"weights do not fit.*{name}: torch.int64"):
        load_checkpoint(path).build_model()

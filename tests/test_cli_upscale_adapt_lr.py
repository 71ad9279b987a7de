"""``medgan upscale --adapt-steps N --adapt-lr LR`` fine-tunes at LR, the rate its provenance records; the default
rate otherwise."""

from __future__ import annotations

import json

import pytest
from conftest import mni_t1_path

import medgan
from medgan.data.degrade import crop_to_multiple
from pipelines import cli

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_adapt_lr_is_the_rate_used_and_recorded(tmp_path):
    from pipelines.commands.upscale import ADAPT_LR

    # a real 1 mm T1 (MNI ICBM152): a 48 x 48 axial slab of 2 slices, degraded in-plane x2
    hr = crop_to_multiple(medgan.load_scan(mni_t1_path())[:, 30:78, 48:96, 78:80], (2, 2, 1))
    low = medgan.save_scan(medgan.degrade(hr, (2, 2, 1)), tmp_path / "lr.nii.gz")
    base = ["upscale", str(low), "--model", "brain-mr-x2-2d", "--device", "cpu", "--adapt-steps", "2"]
    records = {}
    for name, extra in (("given", ["--adapt-lr", "0.003"]), ("default", [])):
        out = tmp_path / f"{name}.nii.gz"
        assert cli.main([base[0], base[1], str(out), *base[2:], *extra, "--no-progress"]) == cli.EXIT_OK
        sidecar = json.loads((tmp_path / f"{name}.json").read_text())
        records[name] = sidecar.get("medgan", sidecar)["adaptation"]
    assert records["given"]["lr"] == pytest.approx(0.003)
    assert records["default"]["lr"] == pytest.approx(ADAPT_LR)

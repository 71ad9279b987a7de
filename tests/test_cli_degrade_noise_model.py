"""``medgan degrade --noise rician`` adds the Rician noise it records: the file equals the library's
:func:`medgan.degrade` with the same options and seed, not Gaussian noise under a Rician label."""

from __future__ import annotations

import json

import numpy as np
from conftest import mni_t1_path

from pipelines import cli


def test_degrade_rician_noise_is_the_librarys(tmp_path):
    from medgan import degrade, load_scan, save_scan

    src = save_scan(load_scan(mni_t1_path())[:, 40:88, 60:108, 60:84], tmp_path / "t1.nii.gz")
    out = tmp_path / "low.nii.gz"
    argv = ["degrade", str(src), str(out), "--factor", "2", "--noise-std", "20", "--noise", "rician", "--seed", "3"]
    assert cli.main(argv) == cli.EXIT_OK
    assert json.loads(out.with_suffix("").with_suffix(".json").read_text())["degradation"]["noise"] == "rician"
    expected = degrade(load_scan(src), 2, noise_std=20.0, noise="rician", seed=3)
    written = load_scan(out)
    np.testing.assert_allclose(written.numpy(), expected.numpy(), rtol=1e-6, atol=1e-3)
    assert written.numpy().min() >= 0  # a magnitude image stays non-negative; Gaussian noise of std 20 does not

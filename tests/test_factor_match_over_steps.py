"""A scan degraded twice through-plane by 2 is back on its source grid after a x4 through-plane model: the model
undoes the last two steps together, so no factor mismatch is recorded or warned, while a x2 model (the last step
only) is also on an earlier grid. Only a factor that undoes no run of last steps is a mismatch."""

from __future__ import annotations

from conftest import crop_scan, mni_t1_path

import medgan


def test_a_model_undoing_the_last_two_steps_together_is_no_mismatch():
    t1 = crop_scan(medgan.load_scan(mni_t1_path()), slice(60, 76), slice(70, 86), slice(40, 72))
    twice = medgan.degrade(medgan.degrade(t1, (1, 1, 2)), (1, 1, 2))
    assert twice.shape == (1, 16, 16, 8)
    out = medgan.SuperResolver("brain-mr-through-plane-x4", device="cpu", precision="fp32").upscale(twice)
    assert out.shape == (1, 16, 16, 32)
    assert "factor_mismatch" not in out.meta["medgan"] and "warnings" not in out.meta["medgan"]

"""The EMA update is ``ema <- d * ema + (1 - d) * weights`` with ``d = min(decay, (1 + n) / (10 + n))``.

Mutation that survived the suite: the lerp weight ``1 - d`` swapped for ``d`` (``ema <- (1 - d) * ema + d *
weights``). Every trainer test passed: the EMA then simply tracks the raw weights (0.999 of them per step), so
"EMA validates close to the raw weights" and "resume is exact" still hold, while the exported "EMA" model is the
last step's raw weights. Also the warm-up constant (``(1 + n) / (2 + n)`` for ``(1 + n) / (10 + n)``) survived.
"""

from __future__ import annotations

import torch
from torch import nn

from medgan.train.ema import make_ema


def test_ema_follows_the_documented_update_rule():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, 3)
    ema = make_ema(model, 0.9)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for n in range(12):  # n earlier updates
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # a training step moved the weights
        ema.update_parameters(model)
        # the documented warm-up, written out (AveragedModel's first update copies the weights)
        d = min(0.9, (1 + n) / (10 + n)) if n else 0.0
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    got = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # and it is an average, not the latest weights
    assert not torch.allclose(got["weight"], model.weight, atol=1e-2)

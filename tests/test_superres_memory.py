"""The lean paths of SuperResolver: in-place blocked normalise/invert, one-pass finite check, meta-device model build.

Each must give exactly (bit for bit) what the straightforward computation gives; no timing assertions (speed and
memory are measured by ``benchmarks/sr_speed.py``).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import mni_t1_path

import medgan
import medgan.infer.superres as S
from medgan.data.normalize import Normalization
from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import available_models
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator


def _bits(t: torch.Tensor) -> torch.Tensor:
    """float32 values as their bit patterns: equal means equal signed zeros and NaN payloads too."""
    return t.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def t1() -> torch.Tensor:
    """The real MNI T1 (1, 155, 192, 161), float32."""
    return medgan.load_scan(mni_t1_path()).as_tensor()[:1].float().clone()


@pytest.fixture(scope="module")
def t1_odd(t1) -> torch.Tensor:
    """A real crop with negative values, both zeros, NaN and infinities."""
    x = t1[:, 40:100, 50:110, 60:90].clone() - 30.0
    x[x == 0] = -0.0
    x[0, ::7, ::5, ::3] = 0.0
    x[0, 3, 4, 5] = float("nan")
    x[0, 10, 20, 7] = float("inf")
    x[0, 11, 2, 1] = -float("inf")
    return x


@pytest.mark.parametrize("invert,clip", [(False, False), (True, False), (True, True)])
def test_blocked_normalisation_is_bit_identical_to_normalization(monkeypatch, t1, t1_odd, invert, clip):
    monkeypatch.setattr(S, "_ELEMWISE_CHUNK", 1000)  # many blocks, ragged ends
    for x in (t1[:, :60, :70, :50], t1_odd):
        finite = x[torch.isfinite(x)]
        norm = Normalization("percentile", 12.5, 87.25, 0.5, 99.5, float(finite.min()) + 3.0, float(finite.max()) - 5.0)
        want = norm.invert(x, clip_to="fit" if clip else None) if invert else norm.apply(x)
        out = torch.empty_like(x)
        S._apply_chunked(norm, x, out, invert=invert, clip=clip)
        assert torch.equal(_bits(out), _bits(want))
        inplace = x.clone()
        S._apply_chunked(norm, inplace, inplace, invert=invert, clip=clip)
        assert torch.equal(_bits(inplace), _bits(want))


def test_invert_into_strided_slices_is_bit_identical(monkeypatch, t1):
    """The 2-D path inverts a slab of slices (S, C, A, B) straight into a Z-fastest output volume's view."""
    monkeypatch.setattr(S, "_ELEMWISE_CHUNK", 4096)
    norm = Normalization("percentile", 3.0, 120.0, 0.5, 99.5, 0.0, 140.0)
    y5 = torch.full((1, 1, 60, 70, 20), 7.0)
    ys = y5.permute(0, 4, 1, 2, 3)  # (N, S, C, A, B), as SuperResolver's slicewise layout
    net = (t1[:, 30:90, 40:110, 50:70] / 100.0 - 0.2).permute(3, 0, 1, 2).contiguous()  # a slab "network output"
    want = y5.clone()
    want.permute(0, 4, 1, 2, 3)[:, 5:17] = norm.invert(net[5:17], clip_to="fit")[None]
    S._apply_chunked(norm, net[5:17][None], ys[:, 5:17], invert=True, clip=True)
    assert torch.equal(_bits(y5), _bits(want))
    # and the normalising direction, gathered from the strided input
    part = ys[:, 2:9]
    out = torch.empty(part.shape)
    S._apply_chunked(norm, part, out, invert=False, clip=False)
    assert torch.equal(_bits(out), _bits(norm.apply(part)))


@pytest.mark.parametrize(
    "shape,limit", [((3, 5, 7), 1), ((3, 5, 7), 6), ((3, 5, 7), 35), ((2, 3, 5, 7), 40), ((4,), 9)]
)
def test_blocks_cover_every_element_once(shape, limit):
    count = torch.zeros(shape, dtype=torch.int64)
    for idx in S._blocks(shape, limit):
        block = count[idx]
        assert block.numel() <= limit
        block += 1
    assert bool((count == 1).all())


def _reference_fit(x: torch.Tensor, rule: dict) -> tuple[Normalization, bool]:
    """The fit as written before the one-pass check: an isfinite mask, then min and max of the finite values."""
    finite = torch.isfinite(x)
    all_finite = bool(finite.all())
    values = x.reshape(-1) if all_finite else x[finite]
    lo, hi = float(values.min()), float(values.max())
    if "offset" in rule:
        return Normalization.from_dict({**rule, "data_min": lo, "data_max": hi}), all_finite
    lower, upper = rule.get("lower", 0.5), rule.get("upper", 99.5)
    v = values.double().numpy()
    if rule.get("method") == "zscore":
        return Normalization("zscore", float(np.mean(v)), float(np.std(v)), None, None, lo, hi), all_finite
    p_lo, p_hi = np.percentile(v, [lower, upper])
    return Normalization("percentile", float(p_lo), float(p_hi - p_lo), lower, upper, lo, hi), all_finite


@pytest.mark.parametrize(
    "rule",
    [
        {"method": "percentile", "lower": 0.5, "upper": 99.5},
        {"method": "zscore"},
        {"method": "percentile", "offset": -20.0, "scale": 300.0},
    ],
    ids=["percentile", "zscore", "fixed"],
)
def test_one_pass_fit_matches_the_masked_fit(t1, t1_odd, rule):
    for x in (t1, t1_odd, t1_odd.nan_to_num(posinf=0.0, neginf=0.0, nan=0.0)):
        got, all_finite = S._fit_normalization_finite(x, rule)
        want, want_finite = _reference_fit(x, rule)
        assert all_finite is want_finite
        assert json_exact(got.to_dict()) == json_exact(want.to_dict())
        assert S._fit_normalization(x, rule) == got


def json_exact(record: dict) -> dict:
    """A record with each float as its repr (keeps -0.0 apart from 0.0)."""
    return {k: repr(v) for k, v in record.items()}


def test_finite_extrema_keeps_min_and_max_zeros():
    """aminmax and min/max may pick different zeros out of -0.0 and 0.0; the record keeps min()/max()'s."""
    for pattern in itertools.product([-0.0, 0.0, 1.0, -1.0], repeat=4):
        x = torch.tensor(pattern)
        lo, hi = S._finite_extrema(x)
        assert (repr(lo), repr(hi)) == (repr(float(x.min())), repr(float(x.max())))
    assert S._finite_extrema(torch.tensor([1.0, float("nan")])) is None
    assert S._finite_extrema(torch.tensor([1.0, float("inf")])) is None
    assert S._finite_extrema(torch.tensor([-float("inf"), 1.0])) is None


def test_slab_streamed_upscale_matches_the_straightforward_computation(monkeypatch, t1):
    """Several slabs of slices, each normalised, run and inverted into the output: the same bits as normalising the
    whole scan with Normalization.apply, running the slabs and assigning Normalization.invert's result."""
    ck = load_checkpoint(available_models()["brain-mr-x2-2d"])
    sr = S.SuperResolver(ck, device="cpu", precision="fp32")
    x = t1[:, 60:92, 70:102, 70:77].clone()
    scan = make_scan(x, np.diag([2.0, 2.0, 1.0, 1.0]), {"filename_or_obj": "mni-crop"})
    monkeypatch.setattr(S, "_CPU_SLAB_VOXELS", 64 * 64 * 3)  # slabs of 3, 3 and 1 slices
    monkeypatch.setattr(S, "_ELEMWISE_CHUNK", 5000)
    got = sr.upscale(scan)

    norm = S._fit_normalization(x, sr.normalization_rule)
    assert got.meta["medgan"]["normalization"] == norm.to_dict()
    xs = norm.apply(x).permute(3, 0, 1, 2)  # (S, C, X, Y)
    want = torch.empty((1, 64, 64, 7))
    with torch.inference_mode():
        for s0 in (0, 3, 6):
            s1 = min(7, s0 + 3)
            out = sr._run(xs[s0:s1].contiguous(), 0.25, None, None, torch.device("cpu"), "fit")
            want.permute(3, 0, 1, 2)[s0:s1] = norm.invert(out, clip_to="fit")
    assert torch.equal(_bits(got.as_tensor()), _bits(want))


def test_model_build_loads_every_weight_without_random_init_or_dynamo():
    """The meta-device skeleton gets memory and the strict load fills it: the weights are the file's, no tensor is
    left on ``meta`` (the detector's MONAI GaussianFilter keeps its sigmas in a plain list: they stayed on meta and its
    forward failed), and the build does not import torch._dynamo (about 1 s per process)."""
    code = """
import sys, torch
from medgan.infer.checkpoint import load_checkpoint
from medgan.infer.pretrained import available_models
from medgan.models.registry import build_generator
models = available_models()
built = {n: load_checkpoint(p).build_model() for n, p in models.items()}
print("dynamo", "torch._dynamo" in sys.modules)
for n, m in built.items():
    ck = load_checkpoint(models[n])
    ref = build_generator(ck.metadata["model"])
    ref.load_state_dict(ck.state_dict, strict=True)
    a, b = m.state_dict(), ref.state_dict()
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def tensors(value, depth=0):  # parameters, buffers and tensors kept as attributes (also in lists and dicts)
        if isinstance(value, torch.Tensor):
            yield value
        elif depth < 3 and isinstance(value, (list, tuple)):
            for v in value:
                yield from tensors(v, depth + 1)
        elif depth < 3 and isinstance(value, dict):
            for v in value.values():
                yield from tensors(v, depth + 1)
    meta = any(t.is_meta for mod in m.modules() for v in vars(mod).values() for t in tensors(v))
    print(n, same, meta, m.training == ref.training, type(m) is type(ref))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == "dynamo False"
    rows = [line.split() for line in lines[1:] if line.strip()]
    assert {r[0] for r in rows} == set(available_models())
    assert all(r[1:] == ["True", "False", "True", "True"] for r in rows), rows


def test_meta_build_keeps_random_init_for_real_builds():
    """Only fills of meta tensors are skipped: a model built outside the block still gets its random weights."""
    cfg = {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 1, "factor": 2}
    torch.manual_seed(0)
    a = build_generator(cfg).state_dict()
    from medgan.infer.checkpoint import _NoRandomFillOnMeta

    with torch.device("meta"), _NoRandomFillOnMeta():
        build_generator(cfg)
    with _NoRandomFillOnMeta():  # on the CPU inside the block: the fills happen
        torch.manual_seed(0)
        b = build_generator(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if k.endswith("weight"))

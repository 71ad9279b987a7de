"""Fast paths of SuperResolver (issue #7): bf16, channels-last, window batching, streaming, compile, fitting.

Every fast path must give the fp32 / whole-volume result (exactly, or within a stated tolerance). No timing
assertions here: speed is measured by ``benchmarks/sr_speed.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import NO_NATIVE_BF16, mni_t1_path

import medgan
import medgan.infer.superres as S
from medgan.data.normalize import fit_normalization
from medgan.errors import MedganError
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.infer.superres import SuperResolver
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator

#: bf16 vs fp32 tolerance, in units of the scan's intensity range (max - min of the fp32 output):
#: bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation), accumulated over the network's layers
BF16_MEAN_TOL = 0.005
BF16_MAX_TOL = 0.05

#: the device of the precision/layout/batching/compile tests: CPU in CI; ``MEDGAN_TEST_DEVICE=cuda`` runs the
#: same assertions on a GPU (there the fp32 reference is true fp32: TF32 is switched off for this module)
DEVICE = os.environ.get("MEDGAN_TEST_DEVICE", "cpu")
#: the reference path: fp32, default memory layout (the GPU defaults are bf16 and channels-last)
FP32 = {"precision": "fp32", "channels_last": False}


@pytest.fixture(scope="module", autouse=True)
def _true_fp32_on_gpu():
    if not DEVICE.startswith("cuda"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def t1_crop():
    """A real 20x24x18 crop of the MNI T1 (brain, not background)."""
    scan = medgan.load_scan(mni_t1_path())
    c = [s // 2 for s in scan.shape[1:]]
    crop = scan[:1, c[0] - 10 : c[0] + 10, c[1] - 12 : c[1] + 12, c[2] - 9 : c[2] + 9]
    return make_scan(crop.as_tensor().clone(), np.asarray(scan.affine), {"filename_or_obj": "mni-crop"})


def _checkpoint(tmp_path, dims: int, roi, **kw):
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": dims, "channels": 8, "n_blocks": 2, "factor": 2, **kw}
    model = build_generator(cfg)
    with torch.no_grad():  # an untrained net's last conv is zero (it starts at its interpolation baseline)
        torch.nn.init.normal_(model.tail[-1].weight, std=0.05)
    path = save_checkpoint(tmp_path / f"m{dims}.safetensors", model, roi_size=roi, modality="MR")
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def ck3(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ck3"), 3, [12, 12, 12], residual_interp="trilinear")


@pytest.fixture(scope="module")
def ck2(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ck2"), 2, [16, 16], residual_interp="bilinear")


@pytest.fixture(scope="module")
def ref3(ck3, t1_crop):
    """fp32, default memory and window layouts (2 fitted windows over the crop), one window per forward pass: the
    reference output of the 3-D model."""
    return SuperResolver(ck3, device=DEVICE, **FP32).upscale(t1_crop, batch_size=1)


def _cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _range_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    rng = float(b.max() - b.min())
    d = (a.as_tensor() - b.as_tensor()).abs() / rng
    return float(d.mean()), float(d.max())


# ---------------------------------------------------------------- normalisation fit
@pytest.mark.parametrize(
    "rule",
    [
        {"method": "percentile", "lower": 0.5, "upper": 99.5},
        {"method": "percentile", "lower": 2.0, "upper": 98.0},
        {"method": "percentile", "lower": 0.0, "upper": 100.0},
        {"method": "zscore"},
    ],
)
def test_fast_fit_matches_fit_normalization_on_real_scan(t1_crop, rule):
    x = t1_crop.as_tensor().clone()
    x[0, 0, 0, :3] = float("nan")  # non-finite voxels are ignored by both
    kwargs = {k: v for k, v in rule.items() if k != "method"}
    want = fit_normalization(x, method=rule["method"], **kwargs)
    got = S._fit_normalization(x, rule)
    for field in ("offset", "scale", "data_min", "data_max"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12, abs=1e-9), field
    assert (got.method, got.lower, got.upper) == (want.method, want.lower, want.upper)


def test_fast_fit_keeps_fit_normalization_errors():
    with pytest.raises(MedganError):
        S._fit_normalization(torch.full((1, 4, 4, 4), float("nan")), {"method": "percentile"})
    with pytest.raises(MedganError):
        S._fit_normalization(torch.ones(1, 4, 4, 4), {"method": "percentile", "lower": 60, "upper": 40})


# ---------------------------------------------------------------- precision, layout, batching
def test_bf16_matches_fp32_within_tolerance(ck3, t1_crop, ref3):
    y32 = ref3
    sr16 = SuperResolver(ck3, device=DEVICE, precision="bf16", channels_last=False)
    assert sr16.precision == "bf16"
    y16 = sr16.upscale(t1_crop)
    assert y16.shape == y32.shape and y16.dtype == torch.float32
    np.testing.assert_allclose(np.asarray(y16.affine), np.asarray(y32.affine))
    mean_err, max_err = _range_err(y16, y32)
    assert mean_err <= BF16_MEAN_TOL, mean_err
    assert max_err <= BF16_MAX_TOL, max_err
    assert mean_err > 0  # bf16 really ran (the outputs are not bit-identical)


def test_bf16_adds_the_interpolation_baseline_in_fp32(tmp_path, t1_crop):
    """The residual baseline carries the intensities: bf16 may round the learned detail, not the baseline."""
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2, "factor": 2}
    model = build_generator({**cfg, "residual_interp": "trilinear"})  # untrained: output = interpolation
    ck = load_checkpoint(save_checkpoint(tmp_path / "interp.safetensors", model, roi_size=[12] * 3, modality="MR"))
    y32 = SuperResolver(ck, device=DEVICE, **FP32).upscale(t1_crop)
    y16 = SuperResolver(ck, device=DEVICE, precision="bf16").upscale(t1_crop)
    assert y16.meta["medgan"]["precision"] == "bf16" and y32.meta["medgan"]["precision"] == "fp32"
    # rounded to bf16, a value of ~1000 would be off by up to 2-4 units; fp32 rounding is ~1e-4
    torch.testing.assert_close(y16.as_tensor(), y32.as_tensor(), rtol=1e-6, atol=1e-3)


def test_pixel_shuffle_keeps_channels_last(ck2):
    from medgan.models.generators import pixel_shuffle_axes

    for dims, factor in [(2, (2, 2)), (2, (1, 3)), (3, (2, 2, 2)), (3, (1, 1, 4))]:
        n = int(np.prod(factor))
        x = torch.randn(2, 3 * n, *[5, 6, 7][:dims])
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        want = pixel_shuffle_axes(x, factor)
        got = pixel_shuffle_axes(x.contiguous(memory_format=fmt), factor)
        assert torch.equal(got, want), (dims, factor)
        assert got.is_contiguous(memory_format=fmt) and not got.is_contiguous()


def test_native_bf16_is_read_from_the_cpu_flags_where_torch_lacks_its_helpers(monkeypatch):
    """torch 2.4 (medgan's floor) has no ``torch.cpu._is_avx512_bf16_supported``: the answer then comes from the
    kernel's CPU flags, not a silent "no" that kept such machines on the 2.1x slower fp32 path."""
    from medgan.infer.device import cpu_has_native_bf16

    if not _cpu_flags() or not torch.backends.mkldnn.is_available():
        pytest.skip("no /proc/cpuinfo flags or no oneDNN here")
    expected = bool({"avx512_bf16", "amx_tile"} & _cpu_flags())
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_has_native_bf16() is expected


def test_auto_precision_on_cpu_follows_native_bf16(ck3, monkeypatch):
    from medgan.infer.device import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    if NO_NATIVE_BF16:  # the suite runs as on a CPU without bf16 instructions, whatever /proc/cpuinfo says
        assert native is False
    else:
        assert native == ("avx512_bf16" in _cpu_flags() or "amx_tile" in _cpu_flags()) or not _cpu_flags()
    sr = SuperResolver(ck3, device="cpu")
    assert (sr.precision, sr.channels_last) == (("bf16", True) if native else ("fp32", False))
    # a CPU without bf16 instructions stays on fp32 (where bf16 would be emulated and slower)
    monkeypatch.setattr(S, "cpu_has_native_bf16", lambda: False)
    sr = SuperResolver(ck3, device="cpu")
    assert sr.precision == "fp32" and sr.channels_last is False
    monkeypatch.setattr(S, "cpu_has_native_bf16", lambda: True)
    sr = SuperResolver(ck3, device="cpu")
    assert sr.precision == "bf16" and sr.channels_last is True
    assert SuperResolver(ck3, device="cpu", precision="fp32").channels_last is False
    with pytest.raises(MedganError, match="precision"):
        SuperResolver(ck3, device="cpu", precision="fp16")


def test_channels_last_matches_default_layout(ck3, ck2, t1_crop, ref3):
    b = SuperResolver(ck3, device=DEVICE, precision="fp32", channels_last=True).upscale(t1_crop)
    torch.testing.assert_close(b.as_tensor(), ref3.as_tensor(), rtol=1e-5, atol=1e-3)
    a = SuperResolver(ck2, device=DEVICE, **FP32).upscale(t1_crop)
    b = SuperResolver(ck2, device=DEVICE, precision="fp32", channels_last=True).upscale(t1_crop)
    torch.testing.assert_close(b.as_tensor(), a.as_tensor(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("batch_size", [5, "auto"])
@pytest.mark.parametrize("layout", ["fit", "checkpoint"])
def test_window_batch_size_does_not_change_the_result(ck3, t1_crop, ref3, batch_size, layout):
    sr = SuperResolver(ck3, device=DEVICE, **FP32)
    ref = ref3 if layout == "fit" else sr.upscale(t1_crop, batch_size=1, roi_size=layout)
    out = sr.upscale(t1_crop, batch_size=batch_size, roi_size=layout)
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("bad", [0, -2, "many", 1.5])
def test_bad_batch_size_is_a_medgan_error(ck3, t1_crop, bad):
    with pytest.raises(MedganError, match="batch_size"):
        SuperResolver(ck3, device="cpu").upscale(t1_crop, batch_size=bad)


# ---------------------------------------------------------------- streaming aggregation
@pytest.mark.parametrize("axes", [None, (2, 1)])
def test_streamed_slabs_equal_whole_volume(ck2, t1_crop, monkeypatch, axes):
    sr = SuperResolver(ck2, device="cpu")
    monkeypatch.setattr(S, "_CPU_SLAB_VOXELS", 1 << 62)
    whole = sr.upscale(t1_crop, axes=axes)
    # slabs of 2 output slices (a ragged last slab too), and of one slice
    out_slice = int(np.prod(whole.shape)) // t1_crop.shape[1 + ({0, 1, 2} - set(axes or (0, 1))).pop()]
    for slab in (2, 1):
        monkeypatch.setattr(S, "_CPU_SLAB_VOXELS", slab * out_slice)
        streamed = sr.upscale(t1_crop, axes=axes)
        if sr.precision == "bf16":  # bit for bit on the AVX512-BF16 CI machine
            assert torch.equal(streamed.as_tensor(), whole.as_tensor())
        else:
            # fp32: a slab changes only how many windows go through the network together, and oneDNN's fp32
            # convolutions round differently for a batch of one slice's windows: measured 2.2e-7 of the range at
            # most (3.1e-5 on values to 146, two float32 ulps; 1-slice slabs; AVX512 and AVX2 kernels alike)
            atol = 1e-6 * float(whole.max() - whole.min())
            torch.testing.assert_close(streamed.as_tensor(), whole.as_tensor(), rtol=0, atol=atol)
        assert streamed.meta["medgan"] == whole.meta["medgan"]


def test_streamed_multichannel_scan_with_one_channel_model(ck2, t1_crop, monkeypatch):
    two = make_scan(torch.cat([t1_crop.as_tensor(), 2.0 * t1_crop.as_tensor()]), np.asarray(t1_crop.affine))
    sr = SuperResolver(ck2, device="cpu")
    monkeypatch.setattr(S, "_CPU_SLAB_VOXELS", 1 << 62)
    whole = sr.upscale(two)
    monkeypatch.setattr(S, "_CPU_SLAB_VOXELS", 3 * 2 * 40 * 48)
    streamed = sr.upscale(two)
    assert streamed.shape == (2, 40, 48, 18)
    assert torch.equal(streamed.as_tensor(), whole.as_tensor())


def test_elementwise_chunks_equal_one_pass(t1_crop, monkeypatch):
    norm = fit_normalization(t1_crop)
    x = t1_crop.as_tensor()
    monkeypatch.setattr(S, "_ELEMWISE_CHUNK", 1000)  # many chunks and a ragged last one
    out = torch.empty_like(x)
    S._apply_chunked(norm, x, out, invert=False, clip=False)
    assert torch.equal(out, norm.apply(x))
    back = out.clone()
    S._apply_chunked(norm, back, back, invert=True, clip=True)
    assert torch.equal(back, norm.invert(out, clip_to="fit"))


# ---------------------------------------------------------------- compile
@pytest.mark.skipif(
    os.environ.get("MEDGAN_TEST_COMPILE") != "1",
    reason="torch.compile on the CPU builds C++ kernels: tens of seconds on 2 cores, over this suite's time budget; "
    "set MEDGAN_TEST_COMPILE=1 to run",
)
def test_compiled_matches_eager(ck3, t1_crop, ref3):
    eager = ref3
    with _no_compile_fallback():
        compiled = SuperResolver(ck3, device=DEVICE, compile=True, **FP32).upscale(t1_crop, batch_size=5)
    torch.testing.assert_close(compiled.as_tensor(), eager.as_tensor(), rtol=1e-4, atol=1e-2)


class _no_compile_fallback:
    """Fail if SuperResolver fell back to eager (the compiled path must really run)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        fell_back = [w for w in self.caught if "torch.compile failed" in str(w.message)]
        assert not fell_back, fell_back[0].message
        return False


# ---------------------------------------------------------------- window size
def test_roi_size_override(ck2, t1_crop):
    sr = SuperResolver(ck2, device="cpu")
    one = sr.upscale(t1_crop, roi_size=t1_crop.shape[1:3])  # one window per slice: no seams at all
    assert one.shape == (1, 40, 48, 18) and bool(torch.isfinite(one.as_tensor()).all())
    checkpoint = sr.upscale(t1_crop, roi_size="checkpoint")
    # the checkpoint's 16^2 windows are below four times the model's context (5): they grow to 20^2
    assert sr.context == (5, 5)
    assert torch.equal(sr.upscale(t1_crop, roi_size=(20, 20)).as_tensor(), checkpoint.as_tensor())
    with pytest.raises(MedganError, match="at least 20 voxels"):  # a given size that small is refused
        sr.upscale(t1_crop, roi_size=(16, 16))
    assert torch.equal(sr.upscale(t1_crop, roi_size=None).as_tensor(), checkpoint.as_tensor())
    assert checkpoint.meta["medgan"]["windows"] == "checkpoint"
    default = sr.upscale(t1_crop)  # fitted windows by default
    assert default.meta["medgan"]["windows"] == "fit"
    assert torch.equal(default.as_tensor(), sr.upscale(t1_crop, roi_size="fit").as_tensor())
    with pytest.raises(MedganError, match="roi_size"):
        sr.upscale(t1_crop, roi_size=(16, 16, 16))


# ---------------------------------------------------------------- fitted windows
@pytest.mark.parametrize(
    ("spatial", "roi", "overlap"),
    [((155, 192, 161), (64, 64, 64), 0.25), ((40, 48, 18), (12, 12, 12), 0.25), ((97, 33, 64), (32, 32, 32), 0.5)],
)
def _tiling(sr, spatial, window, counts):
    """Every voxel covered by the windows, and the voxels neighbours share along each axis."""
    starts = [S._axis_starts(n, w, k) for n, w, k in zip(spatial, window, counts, strict=True)]
    covered = [np.zeros(n, dtype=bool) for n in spatial]
    for axis, (st, w) in enumerate(zip(starts, window, strict=True)):
        for s0 in st:
            covered[axis][s0 : s0 + w] = True
    assert all(c.all() for c in covered)
    return [[w - (b - a) for a, b in zip(st, st[1:], strict=False)] for st, w in zip(starts, window, strict=True)]


@pytest.mark.parametrize(
    ("spatial", "roi", "overlap"),
    [((155, 192, 161), (64, 64, 64), 0.25), ((40, 48, 18), (12, 12, 12), 0.25), ((97, 33, 64), (32, 32, 32), 0.5)],
)
def test_fitted_windows_tile_the_scan_with_the_asked_overlap(ck3, spatial, roi, overlap):
    sr = SuperResolver(ck3, device="cpu")
    sr.roi_size = roi
    window, counts = sr._fit_windows(spatial, overlap)
    assert int(np.prod(window)) <= sr._max_window_voxels([min(r, n) for r, n in zip(roi, spatial, strict=True)])
    assert all(w >= min(r, n) for w, r, n in zip(window, roi, spatial, strict=True))
    # neighbours share >= overlap * checkpoint window and >= twice the context
    for axis, shared in enumerate(_tiling(sr, spatial, window, counts)):
        need = max(np.ceil(overlap * min(roi[axis], spatial[axis])), 2 * sr.context[axis])
        assert all(s >= need for s in shared), (axis, shared)
    # fewer windows than the checkpoint layout
    default = sr._window_layout(spatial, overlap, None)[1]
    assert int(np.prod(counts)) < int(np.prod([len(st) for st in default]))


@pytest.mark.parametrize("overlap", [0.9, 0.99])
def test_fitted_windows_end_when_the_shared_margin_fills_the_window(ck3, overlap, monkeypatch):
    """An overlap close to 1 makes the shared margin as large as the checkpoint window; the window then stops
    shrinking at margin + 1 voxels, and the search stepping one window at a time never ended (24^3 scan, 7x5x3
    checkpoint window). It must end, tile the scan and keep the asked margin."""
    import threading

    monkeypatch.setattr(S, "_CPU_FIT_FEATURES", 0)  # windows of at most 4 checkpoint windows: several per axis
    sr = SuperResolver(ck3, device="cpu")
    sr.roi_size = (7, 5, 3)
    spatial = (40, 40, 40)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(sr._fit_windows(spatial, overlap)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the fitted-window search did not end"
    window, counts = result[0]
    for axis, (base, shared) in enumerate(zip((7, 5, 3), _tiling(sr, spatial, window, counts), strict=True)):
        need = max(np.ceil(overlap * base), 2 * sr.context[axis])
        assert shared and all(s >= need for s in shared), (axis, shared)
        assert window[axis] <= max(2 * need, S._CPU_FIT_WINDOW_FACTOR * base), (axis, window)  # not the whole axis


def test_fitted_windows_one_window_is_the_whole_scan(ck3, t1_crop):
    sr = SuperResolver(ck3, device="cpu")
    sr.roi_size = (16, 16, 16)  # 4 x 16^3 >= the 20x24x18 crop: one fitted window
    fit = sr.upscale(t1_crop, roi_size="fit")
    whole = sr.upscale(t1_crop, roi_size=t1_crop.shape[1:])
    assert torch.equal(fit.as_tensor(), whole.as_tensor())
    np.testing.assert_allclose(np.asarray(fit.affine), np.asarray(whole.affine))


def test_fitted_windows_match_the_default_layout_on_a_shipped_model(t1_crop):
    """Trained 3-D model, real crop: the fitted layout and the checkpoint's give the same output (each output voxel
    is taken from a window where it lies at least the model's context from the inner edges)."""
    sr = SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu")
    sr.roi_size = (10, 10, 10)  # several default windows over the 20x24x18 crop; the fitted ones are 4x larger
    default = sr.upscale(t1_crop, roi_size="checkpoint").as_tensor()
    fit = sr.upscale(t1_crop).as_tensor()  # the default layout
    assert fit.shape == default.shape
    rng = float(default.max() - default.min())
    assert float((fit - default).abs().max()) <= 1e-3 * rng


def test_bad_roi_size_string_is_a_medgan_error(ck3, t1_crop):
    with pytest.raises(MedganError, match="'fit'"):
        SuperResolver(ck3, device="cpu").upscale(t1_crop, roi_size="whole")


def test_tf32_precision(ck3, t1_crop, ref3):
    """TF32 is a CUDA tensor-core mode: the CPU runs it as fp32; on a GPU it stays within the bf16 tolerance of
    fp32 (cuDNN may pick a non-tensor-core kernel for this 8-channel network, so equal is allowed there)."""
    sr = SuperResolver(ck3, device=DEVICE, precision="tf32", channels_last=False)
    assert sr.precision == "tf32"
    out = sr.upscale(t1_crop, batch_size=1)
    if not DEVICE.startswith("cuda"):
        assert torch.equal(out.as_tensor(), ref3.as_tensor())
        return
    mean_err, max_err = _range_err(out, ref3)
    assert mean_err <= BF16_MEAN_TOL and max_err <= BF16_MAX_TOL, (mean_err, max_err)


# ---------------------------------------------------------------- CPU allocator
@pytest.mark.parametrize(("env", "kept"), [("1", "True"), ("0", "False")])
def test_cpu_superresolver_keeps_its_heap_unless_told_not_to(env, kept):
    """CPU inference sets glibc's M_TOP_PAD once per process (fewer page faults per window); MEDGAN_KEEP_CPU_HEAP=0
    leaves the allocator alone. Run in a fresh process: the setting is process-wide."""
    import subprocess
    import sys

    code = (
        "import medgan; from medgan.infer import device; "
        "assert device._heap_kept is None; "
        "medgan.SuperResolver.from_pretrained('brain-mr-x2-3d', device='cpu'); print(device._heap_kept)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "MEDGAN_KEEP_CPU_HEAP": env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kept

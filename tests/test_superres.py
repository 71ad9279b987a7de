"""Checkpoints (medgan.infer.checkpoint) and SuperResolver inference (medgan.infer.superres)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import mni_t1_path
from safetensors.torch import load_file, save_file
from torch import nn

import medgan
from medgan.data.normalize import fit_normalization
from medgan.errors import CheckpointError
from medgan.infer.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from medgan.infer.superres import SuperResolver
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator

# an oblique affine: rotated, anisotropic voxels, arbitrary origin
OBLIQUE = np.array(
    [
        [0.92, -0.15, 0.30, -91.5],
        [0.13, 0.97, -0.21, 12.25],
        [-0.09, 0.17, 2.45, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _generator(dims=3, factor=(2, 2, 2), **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": dims, "channels": 4, "n_blocks": 1, "factor": list(factor), **kw}
    return build_generator(cfg)


def _interp_only(model: nn.Module) -> nn.Module:
    """Zero the last conv: with residual_interp the network is then exactly linear interpolation."""
    nn.init.zeros_(model.tail[-1].weight)
    nn.init.zeros_(model.tail[-1].bias)
    return model


def _pointwise(model: nn.Module) -> nn.Module:
    """Keep only the centre tap of every conv: each output voxel depends on its own input voxel only."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                centre = tuple(k // 2 for k in m.weight.shape[2:])
                keep = m.weight[(slice(None), slice(None), *centre)].clone()
                m.weight.zero_()
                m.weight[(slice(None), slice(None), *centre)] = keep
    return model


def _volume(shape=(1, 12, 10, 8), seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return make_scan(rng.normal(300.0, 80.0, size=shape).astype(np.float32), OBLIQUE, {"filename_or_obj": "x.nii"})


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    g = _generator(factor=(1, 1, 4), residual_interp="trilinear")
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        g,
        name="tiny-z4",
        modality="MR",
        roi_size=[8, 8, 6],
        training_data={"dataset": "unit-test"},
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left behind
    ck = load_checkpoint(path)
    meta = ck.metadata
    assert meta["format"] == FORMAT and meta["name"] == "tiny-z4" and meta["modality"] == "MR"
    assert meta["factor"] == [1, 1, 4] and meta["spatial_dims"] == 3 and meta["roi_size"] == [8, 8, 6]
    assert meta["model"] == g.config and meta["medgan_version"] == medgan.__version__
    assert meta["normalization"]["method"] == "percentile"
    assert meta["training_data"] == {"dataset": "unit-test"}
    assert ck.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    g2 = ck.build_model().eval()
    x = torch.randn(1, 1, 5, 6, 4)
    with torch.no_grad():
        assert torch.equal(g.eval()(x), g2(x))


def test_checkpoint_stores_a_fitted_normalization_record(tmp_path):
    norm = fit_normalization(np.arange(100.0), method="zscore")
    ck = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", _generator(), normalization=norm))
    assert ck.metadata["normalization"] == json.loads(json.dumps(norm.to_dict()))


def test_edited_tensors_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _generator())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(path), metadata=header)  # same header, edited weights
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def _rewrite_metadata(src: Path, dst: Path, edit, *, rehash: bool) -> Path:
    """Copy a checkpoint with its metadata JSON edited (and its metadata hash recomputed when ``rehash``)."""
    from safetensors import safe_open

    from medgan.infer.checkpoint import metadata_sha256

    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
    meta = json.loads(header["medgan"])
    edit(meta)
    header["medgan"] = json.dumps(meta, sort_keys=True)
    if rehash:
        header["metadata_sha256"] = metadata_sha256(header["medgan"])
    save_file(load_file(str(src)), str(dst), metadata=header)
    return dst


def test_edited_metadata_is_refused_and_shipped_models_carry_its_hash(tmp_path):
    """The metadata (normalisation, factor, model config) changes every output: an edit is caught like an edited
    tensor. Older files without a metadata hash are read as before."""
    from safetensors import safe_open

    from medgan.infer.pretrained import available_models

    for name, path in available_models().items():
        with safe_open(str(path), framework="pt") as fh:
            assert "metadata_sha256" in fh.metadata(), name
    shipped = available_models()["brain-mr-x2-2d"]
    edited = _rewrite_metadata(
        shipped,
        tmp_path / "edited.safetensors",
        lambda m: m.update(normalization={"method": "percentile", "lower": 20, "upper": 30}),
        rehash=False,
    )
    with pytest.raises(CheckpointError, match="metadata does not match"):
        load_checkpoint(edited)
    path = save_checkpoint(tmp_path / "old.safetensors", _generator())  # a file from before the metadata hash
    with safe_open(str(path), framework="pt") as fh:
        # an older file has neither the metadata hash nor the "hashes" list of entries that names it
        header = {k: v for k, v in fh.metadata().items() if k not in ("metadata_sha256", "hashes")}
    save_file(load_file(str(path)), str(path), metadata=header)
    assert load_checkpoint(path).metadata["factor"] == [2, 2, 2]


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda m: m.update(factor=[4, 4, 4]), "factor"),
        (lambda m: m.update(factor=2), "factor"),
        (lambda m: m.update(spatial_dims=2), "spatial_dims"),
        (lambda m: m.update(roi_size="abc"), "roi_size"),
        (lambda m: m["model"].update(channels="8"), "model config is not valid"),
    ],
)
def test_contradictory_metadata_is_a_checkpoint_error(tmp_path, edit, pattern, capsys):
    """Metadata that contradicts the model config (written by some other tool, hash and all) is refused when the
    file is read; ``medgan upscale`` says so in one line instead of a torch traceback."""
    from medgan.infer.pretrained import available_models
    from pipelines.cli import main

    bad = _rewrite_metadata(available_models()["brain-mr-x2-3d"], tmp_path / "bad.safetensors", edit, rehash=True)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(bad)
    scan = medgan.save_scan(_volume((1, 8, 8, 8)), tmp_path / "x.nii.gz")
    assert main(["upscale", str(scan), str(tmp_path / "y.nii.gz"), "--model", str(bad), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors" in err[0] and "Traceback" not in err[0]


def test_flipped_payload_byte_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _generator())
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


class _Booby:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_foreign_pickle_is_refused_without_being_executed(tmp_path, writer):
    marker = tmp_path / "marker-was-created"
    path = tmp_path / ("evil.pt" if writer == "torch" else "evil.pkl")
    payload = {"weight": torch.zeros(2), "trap": _Booby(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a medgan checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    with pytest.raises(CheckpointError):
        SuperResolver.from_pretrained(path)
    assert not marker.exists()


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"framework": "someone-else"})
    with pytest.raises(CheckpointError, match="format tag") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage" * 100, b"\xff" * 8 + b"{}"])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_checkpoint(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        SuperResolver.from_pretrained(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="unknown model 'no-such-model'; super-resolution models: ") as err:
        SuperResolver.from_pretrained("no-such-model")
    # only models an upscale can use: the synthesis model and the synthetic-image detector are not offered
    assert "brain-mr-x2-3d" in str(err.value)
    assert "brain-t1-tissue-2d" not in str(err.value) and "synthetic-detector" not in str(err.value)


def test_the_constructor_takes_a_name_or_path_as_from_pretrained_does():
    """``SuperResolver("x.safetensors")`` raised a raw AttributeError ('str' object has no attribute 'metadata')."""
    from medgan.infer.pretrained import pretrained_path

    path = pretrained_path("brain-mr-through-plane-x4")
    for arg in (path, str(path), "brain-mr-through-plane-x4"):
        sr = SuperResolver(arg, device="cpu")
        assert sr.path == path and sr.factor == (1, 1, 4)
    with pytest.raises(CheckpointError, match="expected a shipped model name or a checkpoint path, got int"):
        SuperResolver(3)
    with pytest.raises(CheckpointError, match="not a super-resolution model"):
        SuperResolver("synthetic-detector")


def test_rewriting_model_cards_answers_help_without_writing(tmp_path):
    from medgan.infer.pretrained import PRETRAINED_DIR

    cards = {p: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.md")}
    out = subprocess.run(
        [sys.executable, "-m", "medgan.infer.pretrained", "--help"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("usage: python -m medgan.infer.pretrained")
    assert {p: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.md")} == cards


# ---------------------------------------------------------------- upscale
def _resolver(tmp_path, model, **kw) -> SuperResolver:
    return SuperResolver.from_pretrained(save_checkpoint(tmp_path / "m.safetensors", model, **kw), device="cpu")


@pytest.mark.parametrize(("factor", "shape"), [((2, 2, 2), (1, 12, 10, 8)), ((1, 1, 4), (1, 6, 5, 12))])
def test_upscale_inverts_degrade_geometry_on_an_oblique_affine(tmp_path, factor, shape):
    x = _volume(shape)
    low = medgan.degrade(x, factor)
    sr = _resolver(tmp_path, _generator(factor=factor), roi_size=4)
    assert sr.factor == factor
    y = sr.upscale(low, progress=True)
    assert tuple(y.shape) == tuple(x.shape)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(x.affine), atol=1e-9)
    np.testing.assert_allclose(y.meta["spacing"], x.meta["spacing"], rtol=1e-9)


def test_upscale_affine_arithmetic():
    """New origin = origin - (f - 1) / (2 f) input voxels along each axis; spacing / f."""
    from medgan.data.degrade import upsample_affine

    f = np.array([2.0, 1.0, 4.0])
    up = upsample_affine(OBLIQUE, f)
    np.testing.assert_allclose(up[:3, :3], OBLIQUE[:3, :3] / f)
    np.testing.assert_allclose(up[:3, 3], OBLIQUE[:3, 3] - OBLIQUE[:3, :3] @ ((f - 1) / (2 * f)))


def test_upscale_2d_image(tmp_path):
    x = make_scan(np.random.default_rng(1).random((1, 10, 12), dtype=np.float32), OBLIQUE)
    low = medgan.degrade(x, 2)
    y = _resolver(tmp_path, _generator(dims=2, factor=(2, 2))).upscale(low)
    assert tuple(y.shape) == (1, 10, 12)
    np.testing.assert_allclose(np.asarray(y.affine), OBLIQUE, atol=1e-9)


def test_upscale_values_are_in_the_input_units_and_provenance_is_recorded(tmp_path):
    """An interpolation-only network must give trilinear interpolation in the scan's own units."""
    model = _interp_only(_generator(factor=(2, 2, 1), residual_interp="trilinear"))
    path = save_checkpoint(tmp_path / "interp.safetensors", model, name="interp", roi_size=16)
    sr = SuperResolver.from_pretrained(path)
    x = _volume((1, 10, 9, 7))
    y = sr.upscale(x)  # one window (roi 16 covers the volume): interpolation has no seams to compare
    expected = F.interpolate(x.as_tensor()[None], scale_factor=(2, 2, 1), mode="trilinear", align_corners=False)[0]
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=0, atol=1e-3)
    assert float(y.min()) >= float(x.min()) and float(y.max()) <= float(x.max())
    prov = y.meta["medgan"]
    assert prov["model"] == "interp" and prov["synthetic"] is False
    assert prov["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == sr.sha256
    assert prov["medgan_version"] == medgan.__version__ and prov["factor"] == [2, 2, 1]
    assert prov["normalization"]["method"] == "percentile"
    assert y.meta["filename_or_obj"] == "x.nii"
    json.dumps(prov)  # provenance goes into sidecars: must be JSON-able


SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


def test_through_plane_model_refuses_a_scan_whose_slices_run_along_another_axis(tmp_path):
    """The shipped (1, 1, 4) model upsamples scan axis 2. A real LAS T1 (nibabel's anatomical.nii, 2 mm) with 8 mm
    slices along axis 0 (as a sagittal acquisition reoriented to RAS stores them) came out 8 x 2 x 0.5 mm: the
    in-plane axis thinned, the slices untouched. It is refused; ``axes=(0, 1, 2)`` upscales it as it stands, and the
    slices along axis 2 still land exactly on the high-resolution grid. An in-plane (2, 2, 1) model is not
    refused: its degradation makes the in-plane axes coarser than the slices."""
    from medgan.data.degrade import crop_to_multiple

    sr = SuperResolver.from_pretrained("brain-mr-through-plane-x4", device="cpu", precision="fp32")
    hr = medgan.load_scan(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")
    sagittal = medgan.degrade(hr, (4, 1, 1), method="thick_slice")  # 8 x 2 x 2 mm
    with pytest.raises(medgan.errors.MedganError, match=r"anatomical.nii: .* its slices run along axis 0"):
        sr.upscale(sagittal)
    with pytest.raises(medgan.errors.MedganError, match=r"its slices run along axis 0"):  # before any training
        medgan.adapt_to_scan(sr, sagittal, steps=1)
    forced = sr.upscale(sagittal[:, :, :8, :6], axes=(0, 1, 2))
    assert tuple(forced.shape) == (1, 8, 8, 24)
    axial = medgan.degrade(hr, (1, 1, 4), method="thick_slice")  # 2 x 2 x 8 mm
    y = sr.upscale(axial)
    ref = crop_to_multiple(hr, (1, 1, 4))
    assert tuple(y.shape) == tuple(ref.shape)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(ref.affine), rtol=0, atol=1e-9)
    inplane = _resolver(tmp_path, _generator(factor=(2, 2, 1)), roi_size=8)
    y = inplane.upscale(medgan.degrade(hr, (2, 2, 1)))  # 4 x 4 x 2 mm
    ref = crop_to_multiple(hr, (2, 2, 1))
    assert tuple(y.shape) == tuple(ref.shape)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(ref.affine), rtol=0, atol=1e-9)


def test_an_upscaled_synthetic_image_stays_synthetic(tmp_path):
    """A synthetic input made a "synthetic": False output when its provenance said so only further down the chain
    (medgan before 2026-12-06 wrote an upscaled synthetic image that way) or only in
    SyntheticAugmentedDataset's documented ``meta["synthetic"]`` flag; saved, the output was marked real."""
    sr = _resolver(tmp_path, _generator(dims=2, factor=(2, 2)), roi_size=[16, 16])
    t1 = medgan.load_scan(mni_t1_path())
    pixels = t1.as_tensor()[:, 60:76, 70:86, 80].clone()
    old = {
        "task": "super-resolution",
        "synthetic": False,
        "input": {"task": "synthesis", "model": "brain-t1-tissue-2d", "synthetic": True},
    }
    for meta in ({"medgan": old}, {"synthetic": True, "modality": "MR"}):
        y = sr.upscale(make_scan(pixels, np.asarray(t1.affine), {"filename_or_obj": "syn", **meta}))
        assert y.meta["medgan"]["synthetic"] is True
        path = medgan.save_scan(y, tmp_path / "syn.nii.gz")
        assert medgan.load_scan(path).meta["medgan"]["synthetic"] is True
    real = sr.upscale(make_scan(pixels, np.asarray(t1.affine), {"synthetic": False, "medgan": {"synthetic": False}}))
    assert real.meta["medgan"]["synthetic"] is False


def test_a_2d_scan_with_a_3x3_affine_gets_the_interpolation_geometry(tmp_path):
    """MONAI's ITK reader gives a 2-D image a 3x3 affine. degrade and interpolate embed it in 4x4; upscale raised a
    raw ValueError ("affine must be 4x4") after the whole network pass."""
    from monai.data import MetaTensor

    mr = medgan.load_scan(SAMPLE_DATA / "dicom" / "pydicom_mr_small")  # a real 2-D MR slice, 0.3125 mm
    a4 = np.asarray(mr.affine)
    a3 = np.eye(3)
    a3[:2, :2], a3[:2, 2] = a4[:2, :2], a4[:2, 3]
    x = MetaTensor(mr.as_tensor()[:, :24, :20].clone(), affine=torch.as_tensor(a3), meta={"filename_or_obj": "mr"})
    y = _resolver(tmp_path, _generator(dims=2, factor=(2, 2)), roi_size=[16, 16]).upscale(x)
    baseline = medgan.interpolate(x, 2, order=1)
    assert tuple(y.shape) == tuple(baseline.shape) == (1, 48, 40)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(baseline.affine), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y.meta["spacing"], [0.15625, 0.15625])


def test_sliding_windows_equal_the_whole_volume_pass(tmp_path, monkeypatch):
    """Windows are stitched at the right place of the x factor output grid.

    A network whose every conv keeps only its centre tap has a receptive field of one input
    voxel, so overlapping stitched windows must reproduce the single whole-volume pass
    (tolerance 1e-5 of the largest value).
    """
    model = _pointwise(_generator(factor=(2, 1, 3), residual_interp="nearest"))
    path = save_checkpoint(tmp_path / "pw.safetensors", model, roi_size=[5, 4, 3])
    sr = SuperResolver.from_pretrained(path)
    x = _volume((1, 13, 11, 9))
    windowed = sr.upscale(x, overlap=0.4, batch_size=4, clip=False, roi_size="checkpoint")  # 5x4x3 windows
    import medgan.infer.superres as S

    monkeypatch.setattr(S, "_CPU_FIT_FEATURES", 0)  # fitted windows of 4 checkpoint windows, so several of them
    fitted = sr.upscale(x, overlap=0.4, batch_size=4, clip=False)  # the default: fewer, larger windows
    assert sr._fit_windows(x.shape[1:], 0.4)[0] != [13, 11, 9]  # still several of them
    sr.roi_size = tuple(x.shape[1:])  # one window = the whole volume
    whole = sr.upscale(x, clip=False)
    norm = fit_normalization(x.as_tensor())
    with torch.no_grad():
        direct = norm.invert(model.eval()(norm.apply(x.as_tensor())[None])[0])
    scale = float(direct.abs().max())
    np.testing.assert_allclose(whole.numpy(), direct.numpy(), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(windowed.numpy(), direct.numpy(), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(fitted.numpy(), direct.numpy(), rtol=0, atol=1e-5 * scale)


def test_2d_model_upscales_a_volume_slice_by_slice(tmp_path):
    model = _interp_only(_generator(dims=2, factor=(2, 2), residual_interp="bilinear"))
    sr = _resolver(tmp_path, model, roi_size=[32, 32])  # one window per slice: no seams
    x = _volume((1, 8, 10, 5))
    y = sr.upscale(x)  # default axes (0, 1): X and Y upsampled, slices along Z batched
    assert tuple(y.shape) == (1, 16, 20, 5)
    for z in (0, 4):
        expected = F.interpolate(x.as_tensor()[None, :, :, :, z], scale_factor=2, mode="bilinear")[0]
        np.testing.assert_allclose(y[..., z].numpy(), expected.numpy(), atol=1e-3)
    assert y.meta["medgan"]["axes"] == [0, 1]
    np.testing.assert_allclose(y.meta["spacing"], np.array(x.meta["spacing"]) / [2, 2, 1])

    yz = sr.upscale(x, axes=(0, 2))  # X and Z, slices along Y
    assert tuple(yz.shape) == (1, 16, 10, 10)
    expected = F.interpolate(x.as_tensor()[None, :, :, 3, :], scale_factor=2, mode="bilinear")[0]
    np.testing.assert_allclose(yz[:, :, 3, :].numpy(), expected.numpy(), atol=1e-3)
    np.testing.assert_allclose(np.asarray(yz.affine), medgan.data.degrade.upsample_affine(OBLIQUE, (2, 1, 2)))

    with pytest.raises(medgan.errors.MedganError, match="axes"):
        sr.upscale(x, axes=(1, 1))


def test_scan_factor_is_the_factor_upscale_records_per_scan_axis():
    """``sr.factor`` has one entry per model axis, so ``degrade(vol, sr.factor)`` was refused for a 2-D model on a
    volume; ``scan_factor`` gives the factor per scan axis that ``upscale`` records, with its axes rules."""
    sr = SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    vol = medgan.load_scan(mni_t1_path())  # 155 x 192 x 161, 1 mm
    assert sr.factor == (2, 2)
    assert sr.scan_factor(vol) == (2, 2, 1) and sr.scan_factor(vol, axes=(1, 2)) == (1, 2, 2)
    assert sr.scan_factor(mni_t1_path()) == (2, 2, 1)  # a path is read, as upscale reads it
    lr = medgan.degrade(vol, sr.scan_factor(vol))
    assert tuple(lr.shape[1:]) == (77, 96, 161)
    crop = lr[:, 30:46, 40:56, 80:82]
    up = sr.upscale(crop)
    assert up.meta["medgan"]["factor"] == list(sr.scan_factor(crop))
    assert tuple(up.shape[1:]) == tuple(n * f for n, f in zip(crop.shape[1:], sr.scan_factor(crop), strict=True))
    # the same refusals as upscale, with the same messages
    thick = medgan.degrade(vol, (4, 1, 1))  # slices along axis 0: axes (0, 1) would thin it
    for call in (sr.upscale, sr.scan_factor):
        with pytest.raises(medgan.errors.MedganError, match=r"axes=\(1, 2\)"):
            call(thick)
        with pytest.raises(medgan.errors.MedganError, match="two different spatial axes"):
            call(crop, axes=(1, 1))
    assert sr.scan_factor(thick, axes=(1, 2)) == (1, 2, 2)
    sr3 = SuperResolver.from_pretrained("brain-mr-through-plane-x4", device="cpu")
    assert sr3.scan_factor(vol) == sr3.factor == (1, 1, 4)
    with pytest.raises(CheckpointError, match="3-D model"):
        sr3.scan_factor(vol[:, :, :, 80])


def test_one_channel_model_upscales_each_channel_and_refuses_wrong_dims(tmp_path):
    sr = _resolver(tmp_path, _generator(factor=(2, 2, 2)), roi_size=4)
    x = _volume((2, 6, 6, 4))
    assert tuple(sr.upscale(x).shape) == (2, 12, 12, 8)
    with pytest.raises(CheckpointError, match="3-D model"):
        sr.upscale(make_scan(np.zeros((1, 8, 8), np.float32), np.eye(4)))


def _two_contrast_scan() -> torch.Tensor:
    """Two channels of a real T1 crop: the image and a copy at 2 % of its signal (as in a 4-D series)."""
    t1 = medgan.load_scan(mni_t1_path())[:, 60:84, 70:94, 60:84].as_tensor()
    return make_scan(torch.cat([t1, 0.02 * t1]), OBLIQUE)


def test_one_channel_model_normalises_and_clips_each_channel_on_its_own(tmp_path):
    """A channel of a multi-channel scan comes out exactly as if it were upscaled alone: one normalisation fitted
    over both channels put the faint channel's values below the joint clip floor."""
    sr = _resolver(tmp_path, _generator(factor=(2, 2, 2)), roi_size=8)
    x = _two_contrast_scan()
    both = sr.upscale(x)
    for c in range(2):
        alone = sr.upscale(x[c : c + 1])
        assert torch.equal(both.as_tensor()[c], alone.as_tensor()[0])
        assert both.meta["medgan"]["normalization"][c] == alone.meta["medgan"]["normalization"]
        assert float(both[c].min()) >= float(x[c].min()) and float(both[c].max()) <= float(x[c].max())


def test_non_finite_voxels_stay_in_their_own_output_voxels(tmp_path):
    """A NaN (or inf) voxel goes through the network as a normalised zero and comes back as its own factor-sized
    block of the output; every other output voxel is finite."""
    t1 = medgan.load_scan(mni_t1_path())[:, 60:80, 70:90, 60:80]
    x = t1.clone()
    x[0, 3, 4, 5] = float("nan")
    x[0, 10:12, :, 7] = float("nan")  # part of a slab
    x[0, 15, 15, 15] = float("inf")
    for model, factor in ((_generator(factor=(2, 2, 2)), (2, 2, 2)), (_generator(factor=(1, 1, 4)), (1, 1, 4))):
        y = _resolver(tmp_path, model, roi_size=8).upscale(x).as_tensor()
        expected = x.as_tensor()
        for axis, f in enumerate(factor, start=1):
            expected = expected.repeat_interleave(f, dim=axis)
        assert torch.equal(torch.isnan(y), torch.isnan(expected))
        assert torch.equal(torch.isposinf(y), torch.isposinf(expected))
        assert int(torch.isnan(y).sum()) == (1 + 2 * 20) * int(np.prod(factor))
    two_d = _resolver(tmp_path, _generator(dims=2, factor=(2, 2)), roi_size=[16, 16]).upscale(x)
    assert int(torch.isnan(two_d.as_tensor()).sum()) == (1 + 2 * 20) * 4


def test_zero_overlap_and_non_contiguous_scans(tmp_path, monkeypatch):
    """Fitted windows at overlap 0 (neighbours then share only twice the model's context) tile the scan as one
    window does; a permuted (non-contiguous) scan upscales as its contiguous copy does."""
    import medgan.infer.superres as S

    model = _pointwise(_generator(factor=(2, 2, 2), residual_interp="nearest"))
    sr = _resolver(tmp_path, model, roi_size=[4, 4, 4])
    monkeypatch.setattr(S, "_CPU_FIT_FEATURES", 0)  # fitted windows of 4 checkpoint windows
    x = _volume((1, 32, 24, 24))
    roi, counts = sr._fit_windows(x.shape[1:], 0.0)
    assert int(np.prod(counts)) > 1 and all(w < n for w, n in zip(roi, x.shape[1:], strict=True))  # stitched
    y = sr.upscale(x, overlap=0.0, clip=False)
    direct = sr.upscale(x, overlap=0.0, clip=False, roi_size=x.shape[1:])  # one window
    np.testing.assert_allclose(y.numpy(), direct.numpy(), rtol=0, atol=1e-5 * float(direct.abs().max()))

    permuted = x.permute(0, 2, 1, 3)
    assert not permuted.is_contiguous()
    torch.testing.assert_close(sr.upscale(permuted).as_tensor(), sr.upscale(permuted.contiguous()).as_tensor())


def test_a_fixed_normalization_record_clips_to_the_scan_it_upscales(tmp_path):
    """A checkpoint may store a fitted record (a fixed map, e.g. a CT window): the map is fixed, the clip range is
    the input's own, not the range the record was fitted on."""
    x = medgan.load_scan(mni_t1_path())[:, 60:76, 70:86, 60:76]
    norm = fit_normalization(np.linspace(-1000.0, 1000.0, 100))  # data range [-1000, 1000]
    model = _interp_only(_generator(factor=(2, 2, 2), residual_interp="trilinear"))
    sr = _resolver(tmp_path, model, roi_size=8, normalization=norm)
    shifted = x + 2000.0  # entirely outside the record's data range
    y = sr.upscale(shifted)
    assert float(y.min()) >= float(shifted.min()) and float(y.max()) <= float(shifted.max())
    assert float(y.std()) > 0.1 * float(shifted.std())  # an image, not a constant at the record's clip bound
    record = y.meta["medgan"]["normalization"]
    assert (record["offset"], record["scale"]) == (norm.offset, norm.scale)
    assert (record["data_min"], record["data_max"]) == (float(shifted.min()), float(shifted.max()))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"overlap": -0.1}, "overlap must be"),
        ({"overlap": 1.0}, "overlap must be"),
        ({"overlap": float("nan")}, "overlap must be"),
        ({"overlap": 0.5, "roi_size": "checkpoint", "batch_size": 0}, "batch_size"),
        ({"roi_size": 4.7}, "roi_size must be"),
        ({"roi_size": "4"}, "roi_size must be"),
        ({"roi_size": (4, 0, 4)}, "roi_size must be"),
    ],
)
def test_bad_upscale_arguments_raise_medgan_errors(tmp_path, kwargs, pattern):
    sr = _resolver(tmp_path, _generator(factor=(2, 2, 2)), roi_size=4)
    with pytest.raises(medgan.errors.MedganError, match=pattern):
        sr.upscale(_volume((1, 6, 6, 4)), **kwargs)


def test_unknown_compile_mode_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _generator())
    with pytest.raises(medgan.errors.MedganError, match="torch.compile mode"):
        SuperResolver.from_pretrained(path, device="cpu", compile="fastest")


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 16, 16)])
def test_a_one_voxel_thick_scan_in_bf16_channels_last(shape):
    """oneDNN's bf16 channels-last convolutions gave NaN now and then for windows with an axis of one voxel (1x1x1
    in about 1 of 64 calls, 1 x 16 x 16 in 7 of 40; uninitialised memory): such windows run contiguous in fp32."""
    sr = SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu", precision="bf16", channels_last=True)
    for i in range(16):
        x = np.random.default_rng(i).uniform(0, 100, (1, *shape)).astype(np.float32)
        y = sr.upscale(make_scan(x, np.eye(4)), clip=False)
        assert y.shape == (1, *(2 * n for n in shape)) and bool(torch.isfinite(y.as_tensor()).all()), i


# ---------------------------------------------------------------- learning on real data


def _mni_crop() -> torch.Tensor:
    """16^3 mm of the MNI ICBM152 T1 through the basal ganglia / ventricles (real anatomy, uint8 values)."""
    return medgan.load_scan(mni_t1_path())[:, 67:83, 82:98, 80:96]  # sample_data: the template cropped by (21, 22, 0)


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    rng = float(ref.max() - ref.min())
    return float(10 * np.log10(rng**2 / np.mean((pred - ref) ** 2)))


def test_tiny_generator_overfits_a_real_volume_beyond_cubic_interpolation(tmp_path, torch_one_thread):
    """L1 training on one MNI crop (2x block-mean degraded) must clearly beat cubic interpolation.

    Then the same weights, saved and reloaded, go through the full SuperResolver path
    (normalise -> sliding windows -> invert) and keep the advantage.
    """
    from scipy.ndimage import zoom

    hr = _mni_crop()
    hr_np = hr.numpy()[0]
    lr_np = hr_np.reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
    lr = make_scan(lr_np[None], medgan.data.degrade.downsample_affine(np.asarray(hr.affine), (2, 2, 2)))
    cubic = zoom(lr_np, 2, order=3, grid_mode=True, mode="grid-mirror")
    psnr_cubic = _psnr(cubic, hr_np)

    torch.manual_seed(0)
    model = build_generator(
        {
            "arch": "srresnet",
            "spatial_dims": 3,
            "channels": 8,
            "n_blocks": 1,
            "factor": 2,
            "residual_interp": "trilinear",
        }
    )
    rule = {"method": "percentile", "lower": 0.5, "upper": 99.5}
    norm = fit_normalization(lr_np, **{k: rule[k] for k in ("lower", "upper")})
    x = torch.as_tensor(norm.apply(lr_np), dtype=torch.float32)[None, None]
    target = torch.as_tensor(norm.apply(hr_np), dtype=torch.float32)[None, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):  # about 3 s on 2 CPU cores
        opt.zero_grad()
        loss = F.l1_loss(model(x), target)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = norm.invert(model(x)[0, 0].numpy())
    psnr_model = _psnr(pred, hr_np)
    assert psnr_model > psnr_cubic + 2.0, (psnr_model, psnr_cubic)

    path = save_checkpoint(tmp_path / "mni.safetensors", model, normalization=rule, roi_size=6, modality="MR")
    up = SuperResolver.from_pretrained(path).upscale(lr, overlap=0.5)
    assert tuple(up.shape) == tuple(hr.shape)
    np.testing.assert_allclose(np.asarray(up.affine), np.asarray(hr.affine), atol=1e-9)
    assert _psnr(up.numpy()[0], hr_np) > psnr_cubic + 1.0


# ---------------------------------------------------------------- command line
def test_cli_upscale_writes_a_nifti_with_the_original_geometry(tmp_path, capsys):
    from pipelines.cli import main

    x = _volume((1, 8, 6, 4))
    low_path = medgan.save_scan(medgan.degrade(x, (2, 2, 1)), tmp_path / "low.nii.gz")
    model = save_checkpoint(tmp_path / "m.safetensors", _generator(factor=(2, 2, 1)), name="cli-test", roi_size=4)
    out = tmp_path / "sr.nii.gz"
    assert main(["upscale", str(low_path), str(out), "--model", str(model), "--device", "cpu", "--overlap", "0.5"]) == 0
    y = medgan.load_scan(out)
    assert tuple(y.shape) == tuple(x.shape)
    np.testing.assert_allclose(np.asarray(y.affine), np.asarray(x.affine), atol=1e-4)

    assert main(["upscale", str(low_path), str(tmp_path / "b.nii.gz"), "--model", "no-such-model"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert not (tmp_path / "b.nii.gz").exists()

    # --axes with a 3-D model: the error names the file and the option, as on a folder tree (it said only "axes=")
    assert main(["upscale", str(low_path), str(tmp_path / "c.nii.gz"), "--model", str(model), "--axes", "0,2"]) == 1
    err = capsys.readouterr().err
    assert "low.nii.gz: axes= (--axes) picks the two axes of a 2-D model applied to a 3-D volume" in err, err
    assert "3-D model (cli-test) on a 3-D scan takes only (0, 1, 2)" in err and not (tmp_path / "c.nii.gz").exists()


def test_synthesis_checkpoint_is_refused_by_superresolver(tmp_path):
    from medgan.data.normalize import fit_normalization
    from medgan.infer.synthesis import save_synthesizer
    from medgan.models.registry import build_cgan_generator

    gen = build_cgan_generator({"arch": "spade", "spatial_dims": 2, "num_labels": 4, "channels": [8, 8], "z_dim": 2})
    norm = fit_normalization(np.arange(10, dtype=np.float32)[None])
    path = save_synthesizer(
        tmp_path / "syn.safetensors", gen, labels={0: "bg", 1: "a", 2: "b", 3: "c"}, normalization=norm
    )
    with pytest.raises(CheckpointError, match="synthesis checkpoint"):
        SuperResolver.from_pretrained(path)


def test_shipped_model_cards_are_the_rendered_ones_and_state_the_augmentation():
    """Cards are rendered from checkpoint metadata; the detector's card said 'augmentation: null' although its
    training recorded augmentation (under training_data)."""
    from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card

    for model_path in sorted(PRETRAINED_DIR.glob("*.safetensors")):
        card = model_path.with_suffix(".md").read_text(encoding="utf-8")
        assert card.split("<!-- notes -->")[0] == render_model_card(model_path), model_path.name
    detector = (PRETRAINED_DIR / "synthetic-detector.md").read_text(encoding="utf-8")
    assert "- augmentation: `true`" in detector


def test_upscale_and_adapt_take_a_file_path_as_str_or_path(tmp_path):
    # a str or Path gave a raw float() error (the path was turned into an array); it is read with load_scan
    sr = _resolver(tmp_path, _interp_only(_generator(residual_interp="trilinear")), name="interp")
    scan = _volume()
    path = medgan.save_scan(scan, tmp_path / "low.nii.gz")
    want = sr.upscale(scan)
    for given in (str(path), path):
        got = sr.upscale(given)
        assert torch.equal(got.as_tensor(), want.as_tensor())
        assert np.allclose(got.affine, want.affine, atol=1e-6)
    adapted = medgan.adapt_to_scan(sr, str(path), steps=0)
    assert adapted.upscale(path).shape == want.shape


def test_a_card_renders_the_same_wherever_the_repository_is_checked_out(tmp_path):
    """The cards' training-data paths were relative only under the checkout that trained (/work/main): in a clone
    elsewhere they came out absolute, so the rendered card differed from the shipped one."""
    from medgan.infer import pretrained

    clone = tmp_path / "elsewhere" / "medgan"
    (clone / "medgan").mkdir(parents=True)
    (clone / "medgan" / "pretrained").symlink_to(pretrained.PRETRAINED_DIR)
    (clone / "sample_data").symlink_to(pretrained.PRETRAINED_DIR.parents[1] / "sample_data")
    recorded = str(pretrained.PRETRAINED_DIR.parents[1] / "sample_data" / "nifti" / "nibabel" / "anatomical.nii")
    here = pretrained._repo_relative(recorded)
    pretrained_dir = pretrained.PRETRAINED_DIR
    try:
        pretrained.PRETRAINED_DIR = clone / "medgan" / "pretrained"
        assert pretrained._repo_relative(recorded) == here == "sample_data/nifti/nibabel/anatomical.nii"
        assert pretrained._repo_relative("/elsewhere/data/t1.nii.gz") == "/elsewhere/data/t1.nii.gz"
    finally:
        pretrained.PRETRAINED_DIR = pretrained_dir


@pytest.mark.parametrize("flat_scale", ["range", "unit", None])
def test_upscale_fits_the_normalisation_training_fits(flat_scale):
    """upscale's memory-lean fit gave scale 1 where the percentiles coincide (a mostly empty scan: five bright
    voxels in 20^3) while fit_normalization, which training uses, gives the data's range: inputs 1000x larger
    than in training."""
    from medgan.infer.superres import _fit_normalization

    x = torch.zeros((1, 20, 20, 20))
    x[0, :5, 0, 0] = 1000.0
    real = medgan.load_scan(mni_t1_path())[:, 60:90, 70:100, 60:90].as_tensor()
    rule = {"method": "percentile", "lower": 0.5, "upper": 99.5}
    kw = {}
    if flat_scale is not None:
        rule["flat_scale"] = kw["flat_scale"] = flat_scale
    for scan in (x, real):
        lean = _fit_normalization(scan, rule)
        ref = fit_normalization(scan, method="percentile", lower=0.5, upper=99.5, **kw)
        assert lean.offset == ref.offset and lean.scale == ref.scale, (lean, ref)
    assert _fit_normalization(x, rule).scale == (1.0 if flat_scale == "unit" else 1000.0)

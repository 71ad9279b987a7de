"""Synthesizer checkpoints, generation (determinism, shapes, units, errors), provenance on disk, the synthesize
command, and the synthetic-image detector — on the real MNI template and its tissue labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F

import medgan
from medgan.data.labels import TISSUE_LABELS, one_hot, tissue_labels
from medgan.data.normalize import Normalization, fit_normalization
from medgan.errors import CheckpointError, MedganError
from medgan.infer import detect
from medgan.infer.checkpoint import load_checkpoint, save_checkpoint
from medgan.infer.detect import SyntheticDetector, detect_synthetic, train_detector
from medgan.infer.synthesis import Synthesizer, save_synthesizer
from medgan.io.scan import make_scan
from medgan.models.registry import build_cgan_generator, build_generator
from pipelines.cli import main as cli_main

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
TINY_G = {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread


@pytest.fixture(scope="module")
def mni():
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    norm = fit_normalization(t1, method="percentile", lower=0.0, upper=99.5)  # background 0 stays reachable
    return t1, labels, norm


@pytest.fixture(scope="module")
def models(mni, tmp_path_factory):
    """A 2-D and a 3-D synthesis checkpoint (untrained weights; the format and inference are under test)."""
    _, _, norm = mni
    folder = tmp_path_factory.mktemp("synth")
    torch.manual_seed(0)
    g2 = build_cgan_generator(TINY_G)
    g3 = build_cgan_generator({**TINY_G, "spatial_dims": 3})
    p2 = save_synthesizer(folder / "mni2d.safetensors", g2, labels=TISSUE_LABELS, normalization=norm, modality="MR")
    p3 = save_synthesizer(folder / "mni3d.safetensors", g3, labels=TISSUE_LABELS, normalization=norm, modality="MR")
    return {"g2": g2, "p2": p2, "p3": p3, "folder": folder}


def test_checkpoint_round_trip(models, mni):
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    assert synth.labels == TISSUE_LABELS
    assert synth.spatial_dims == 2
    assert synth.metadata["task"] == "synthesis"
    assert synth.normalization == mni[2]
    for name, tensor in models["g2"].state_dict().items():
        assert torch.equal(synth.model.state_dict()[name], tensor)
    # the seed contract: z = randn(noise shape, torch.Generator().manual_seed(seed)); output = invert(G(onehot, z))
    labels = mni[1][:, 40:72, 50:82, 80]
    out = synth.generate(labels, seed=5, clip=False)
    z = torch.randn((1, *synth.model.noise_shape((32, 32))), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = mni[2].invert(models["g2"].eval()(one_hot(labels, sorted(TISSUE_LABELS)), z)[:, 0])
    assert torch.allclose(out.as_tensor(), expected, atol=1e-4)


def test_generate_2d_determinism_shape_geometry_units(models, mni):
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    labels = mni[1][:, :, :, 80]  # a real axial label slice with its affine
    a = synth.generate(labels, n=3, seed=11)
    b = synth.generate(labels, n=3, seed=11)
    c = synth.generate(labels, n=3, seed=12)
    assert a.shape == (3, *labels.shape[1:])
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert not torch.allclose(a.as_tensor(), c.as_tensor())
    assert not torch.allclose(a[0], a[1])  # samples of one call differ
    assert np.allclose(a.affine, labels.affine)
    # values are in the T1's units (the fitted normalisation inverted and clipped), not in [0, 1]
    norm = mni[2]
    assert float(a.min()) >= norm.data_min and float(a.max()) <= norm.data_max
    assert float(a.max() - a.min()) > 5.0
    prov = a.meta["medgan"]
    assert prov["synthetic"] is True and prov["seed"] == 11 and prov["model"] == "mni2d"
    assert prov["model_sha256"] == synth.sha256 and prov["medgan_version"] == medgan.__version__
    assert a.meta["modality"] == "MR"


def test_generate_3d_and_slicewise(models, mni):
    labels = mni[1][:, 40:60, 50:74, 70:76]  # (1, 20, 24, 6)
    synth3 = Synthesizer.from_pretrained(models["p3"], device="cpu")
    v = synth3.generate(labels, n=2, seed=1)
    assert v.shape == (2, 20, 24, 6)
    assert torch.equal(v.as_tensor(), synth3.generate(labels, n=2, seed=1).as_tensor())
    assert np.allclose(v.affine, labels.affine)
    synth2 = Synthesizer.from_pretrained(models["p2"], device="cpu")
    s = synth2.generate(labels, n=2, seed=1)  # a 2-D model on a volume: slice by slice along the last axis
    assert s.shape == (2, 20, 24, 6)
    assert s.meta["medgan"]["slice_axis"] == 2
    unseeded = synth2.generate(labels)
    assert isinstance(unseeded.meta["medgan"]["seed"], int)  # recorded, so the output can be reproduced
    redo = synth2.generate(labels, seed=unseeded.meta["medgan"]["seed"])
    assert torch.equal(unseeded.as_tensor(), redo.as_tensor())


def test_generate_errors(models, mni):
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    bad = mni[1][:, 40:72, 50:82, 80].clone()
    bad[0, 3, 3] = 9
    with pytest.raises(MedganError, match=r"\[9\]"):
        synth.generate(bad, seed=0)
    with pytest.raises(MedganError, match="no class condition"):
        synth.generate(mni[1][:, 40:72, 50:82, 80], condition={"class": "T2"})
    with pytest.raises(MedganError, match=r"\(1, X, Y"):
        synth.generate(np.zeros((2, 8, 8)))
    with pytest.raises(CheckpointError, match="synthesis models: brain-t1-tissue-2d \\("):
        Synthesizer.from_pretrained("no-such-model")
    assert (
        Synthesizer("brain-t1-tissue-2d", device="cpu").sha256
        == Synthesizer.from_pretrained("brain-t1-tissue-2d").sha256
    )
    sr = build_generator({"arch": "srresnet", "spatial_dims": 2, "channels": 4, "n_blocks": 1, "factor": 2})
    sr_path = save_checkpoint(models["folder"] / "sr.safetensors", sr)
    with pytest.raises(CheckpointError, match="not a synthesis model"):
        Synthesizer.from_pretrained(sr_path)


def test_provenance_on_disk_nifti_and_dicom(models, mni, tmp_path):
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    labels = mni[1][:, 40:72, 50:82, 78:82]
    out = synth.generate(labels, seed=3)
    path = medgan.save_scan(out, tmp_path / "syn.nii.gz")
    descrip = nib.load(path).header["descrip"].tobytes().decode()
    assert "synthetic=True" in descrip
    sidecar = json.loads((tmp_path / "syn.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["seed"] == 3 and sidecar["task"] == "synthesis"
    back = medgan.load_scan(path)
    assert back.shape == out.shape and np.allclose(back.affine, out.affine, atol=1e-4)
    folder = medgan.save_scan(out, tmp_path / "dicom", format="dicom")
    files = sorted(folder.glob("*.dcm")) or sorted(p for p in folder.iterdir() if p.is_file())
    ds = pydicom.dcmread(files[0])
    assert "synthetic=True" in str(ds.DerivationDescription)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]


def test_synthesize_command(models, mni, tmp_path):
    labels_path = medgan.save_scan(mni[1][:, 40:72, 50:82, 78:82], tmp_path / "labels.nii.gz")
    out = tmp_path / "out" / "syn.nii.gz"
    out.parent.mkdir()
    args = ["synthesize", "--model", str(models["p2"]), "--labels", str(labels_path), "--out", str(out)]
    assert cli_main([*args, "-n", "2", "--seed", "4", "--deform", "--labels-out", str(tmp_path / "def.nii.gz")]) == 0
    files = sorted(out.parent.glob("syn_*.nii.gz"))
    assert [f.name for f in files] == ["syn_000.nii.gz", "syn_001.nii.gz"]
    meta = json.loads((out.parent / "syn_001.json").read_text())
    assert meta["synthetic"] is True and meta["sample_index"] == 1 and meta["seed"] == 4
    assert meta["label_deformation"]["seed"] == 4
    assert nib.load(files[0]).shape == (32, 32, 4)
    assert cli_main([*args, "-n", "3", "--seed", "4", "--stack"]) == 0
    assert nib.load(out).shape == (32, 32, 4, 3)
    bad = mni[1][:, 40:72, 50:82, 78:82].clone()
    bad[0, 0, 0, 0] = 7
    bad_path = medgan.save_scan(bad, tmp_path / "bad.nii.gz")
    args[4] = str(bad_path)
    assert cli_main([*args, "--seed", "1"]) == 1


def _real_and_fake_slices(models, mni, n: int = 12):
    t1, labels, _ = mni
    ks = np.linspace(55, 115, n).round().astype(int)
    real = F.interpolate(t1.as_tensor()[0, :, :, ks].permute(2, 0, 1)[:, None], size=(48, 48), mode="area")
    lab = F.interpolate(labels.as_tensor()[0, :, :, ks].permute(2, 0, 1)[:, None], size=(48, 48), mode="nearest")
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    fake = torch.stack([synth.generate(make_scan(m, np.eye(4)), seed=int(i))[0] for i, m in enumerate(lab)])
    return real[:, 0], fake


def test_detector_trains_and_scores(models, mni, tmp_path):
    real, fake = _real_and_fake_slices(models, mni)
    ckpt = train_detector(real[:8], fake[:8], tmp_path / "det.safetensors", epochs=15, batch_size=8, seed=0)
    assert ckpt.metadata["task"] == "synthetic-detection"
    assert ckpt.metadata["training_data"]["n_real"] == 8 and ckpt.metadata["training_data"]["train_accuracy"] >= 0.9
    detector = SyntheticDetector(ckpt)
    # held-out slices: generated ones score higher than real ones
    fake_score = detect_synthetic(fake[8:], detector=detector)
    real_score = detect_synthetic(real[8:], detector=tmp_path / "det.safetensors")
    assert 0.0 <= real_score < 0.5 < fake_score <= 1.0
    # a volume is scored slice by slice
    vol = make_scan(torch.cat([real[8:], fake[8:]]).permute(1, 2, 0)[None], np.eye(4))
    assert 0.0 <= detect_synthetic(vol, detector=load_checkpoint(tmp_path / "det.safetensors")) <= 1.0
    assert medgan.detect_synthetic is detect_synthetic


def test_detect_without_detector_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(detect, "DEFAULT_DETECTOR", tmp_path / "synthetic-detector.safetensors")
    with pytest.raises(CheckpointError, match="no synthetic-image detector.*train_detector"):
        detect_synthetic(np.ones((1, 8, 8)))
    with pytest.raises(CheckpointError, match="not found"):
        detect_synthetic(np.ones((1, 8, 8)), detector=tmp_path / "missing.safetensors")


def test_normalization_must_be_fitted(models, tmp_path):
    with pytest.raises(Exception, match="malformed|offset"):
        save_synthesizer(tmp_path / "x.safetensors", models["g2"], labels=TISSUE_LABELS, normalization={"method": "x"})
    norm = Normalization(method="percentile", offset=0.0, scale=1.0)
    with pytest.raises(ValueError, match="labels"):
        save_synthesizer(tmp_path / "x.safetensors", models["g2"], labels={0: "a"}, normalization=norm)


def test_class_and_slice_position_conditions(mni, tmp_path):
    torch.manual_seed(0)
    g = build_cgan_generator({**TINY_G, "num_classes": 2, "scalar_condition": True})
    path = save_synthesizer(
        tmp_path / "cond.safetensors",
        g,
        labels=TISSUE_LABELS,
        normalization=mni[2],
        classes=["T1w", "T2w"],
        scalar_condition="slice_position",
    )
    synth = Synthesizer.from_pretrained(path, device="cpu")
    volume = mni[1][:, 40:60, 50:74, 70:74]
    by_name = synth.generate(volume, seed=2, condition={"class": "T2w"})  # slice positions filled in: 0, 1/3, ...
    by_index = synth.generate(volume, seed=2, condition={"class": 1})
    assert torch.equal(by_name.as_tensor(), by_index.as_tensor())
    assert not torch.equal(by_name.as_tensor(), synth.generate(volume, seed=2, condition={"class": 0}).as_tensor())
    assert by_name.meta["medgan"]["condition"] == {"class": "T2w", "scalar": "slice_position"}
    slice_2d = volume[..., 1]
    fixed = synth.generate(slice_2d, seed=2, condition={"class": "T2w", "scalar": 0.25})
    assert fixed.meta["medgan"]["condition"]["scalar"] == 0.25
    with pytest.raises(MedganError, match="conditioned on a class"):
        synth.generate(volume, seed=2)
    # a 2-D slice without its position: mid-volume, recorded
    assert synth.generate(slice_2d, seed=2, condition={"class": "T1w"}).meta["medgan"]["condition"]["scalar"] == 0.5
    with pytest.raises(MedganError, match="unknown class"):
        synth.generate(volume, seed=2, condition={"class": "FLAIR"})


def test_shipped_detector_tells_the_shipped_generator_from_real_scans(mni):
    """The shipped detector on data it was not trained on: held-out MNI slices (real), the XA30 T1w of another
    subject (real, held out of the detector's training), and the shipped generator's images of held-out label maps."""
    assert detect.DEFAULT_DETECTOR.is_file()
    t1, labels, _ = mni
    held_out = list(range(73, 87, 4))  # inside the generator's validation slab (training slices exclude 70-89)
    synth = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    n_slices = labels.shape[3]
    fake = [synth.generate(labels[..., k], n=1, seed=k, condition={"scalar": k / (n_slices - 1)})[0] for k in held_out]
    fake_scores = [detect_synthetic(f) for f in fake]
    real_scores = [detect_synthetic(t1[..., k]) for k in held_out]
    print("real", real_scores, "synthetic", fake_scores)
    assert max(real_scores) < 0.5 < min(fake_scores), (real_scores, fake_scores)
    xa30 = medgan.load_scan(Path(__file__).resolve().parents[1] / "sample_data/dicom/dcm_qa_xa30_t1w_tfl3d")
    assert detect_synthetic(xa30) < 0.5


# ---------------------------------------------------------------- review fixes: conditions, sizes, seeds, detector
@pytest.fixture(scope="module")
def shipped():
    """The shipped 2-D synthesis model (slice-position condition, 3 upsampling levels)."""
    return Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")


def test_scalar_condition_must_be_finite_and_in_the_training_range(shipped, mni):
    labels = mni[1][:, 40:72, 50:82, 80]
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(MedganError, match="must be finite"):
            shipped.generate(labels, seed=1, condition={"scalar": bad})
    for bad in (7.0, -0.1, 1.01):  # a slice position is a relative position in [0, 1]
        with pytest.raises(MedganError, match=r"must be in \[0, 1\]"):
            shipped.generate(labels, seed=1, condition={"scalar": bad})
    for edge in (0.0, 1.0):
        out = shipped.generate(labels, seed=1, condition={"scalar": edge})
        assert torch.isfinite(out.as_tensor()).all() and out.meta["medgan"]["condition"]["scalar"] == edge
    assert shipped.scalar_condition == "slice_position" and shipped.scalar_range == (0.0, 1.0)


def test_scalar_range_recorded_in_the_checkpoint_is_enforced(mni, tmp_path):
    torch.manual_seed(0)
    g = build_cgan_generator({**TINY_G, "scalar_condition": True})
    path = save_synthesizer(
        tmp_path / "age.safetensors",
        g,
        labels=TISSUE_LABELS,
        normalization=mni[2],
        scalar_condition="age",
        scalar_range=(20.0, 80.0),
    )
    synth = Synthesizer.from_pretrained(path, device="cpu")
    assert synth.scalar_range == (20.0, 80.0) and synth.metadata["scalar_range"] == [20.0, 80.0]
    labels = mni[1][:, 40:72, 50:82, 80]
    assert synth.generate(labels, seed=0, condition={"scalar": 45}).meta["medgan"]["condition"]["scalar"] == 45.0
    with pytest.raises(MedganError, match=r"must be in \[20, 80\]"):
        synth.generate(labels, seed=0, condition={"scalar": 0.5})
    with pytest.raises(MedganError, match="must be finite"):
        synth.generate(labels, seed=0, condition={"scalar": float("nan")})


def test_per_slice_scalar_sequences(shipped, mni):
    volume = mni[1][:, 40:72, 50:82, 79:82]  # 3 axial slices
    by_list = shipped.generate(volume, seed=2, condition={"scalar": [0.0, 0.5, 1.0]})
    assert by_list.meta["medgan"]["condition"]["scalar"] == [0.0, 0.5, 1.0]
    json.dumps(by_list.meta["medgan"])  # the provenance stays JSON-able (written to the sidecar)
    default = shipped.generate(volume, seed=2)  # positions k / (S - 1): the same values
    assert torch.equal(by_list.as_tensor(), default.as_tensor())
    assert default.meta["medgan"]["condition"]["scalar"] == "slice_position"
    other = shipped.generate(volume, seed=2, condition={"scalar": np.array([0.2, 0.3, 0.4])})
    assert not torch.equal(other.as_tensor(), default.as_tensor())
    with pytest.raises(MedganError, match="2 values for 3 slice"):
        shipped.generate(volume, seed=2, condition={"scalar": [0.1, 0.2]})
    with pytest.raises(MedganError, match="a number or a 1-D sequence"):
        shipped.generate(volume, seed=2, condition={"scalar": "0.5"})
    with pytest.raises(MedganError, match="a number or a 1-D sequence"):
        shipped.generate(volume, seed=2, condition={"scalar": [[0.1, 0.2, 0.3]]})
    with pytest.raises(MedganError, match="must be finite"):
        shipped.generate(volume, seed=2, condition={"scalar": [0.1, float("nan"), 0.3]})


def test_class_index_must_be_an_integer(mni, tmp_path):
    torch.manual_seed(0)
    g = build_cgan_generator({**TINY_G, "num_classes": 2})
    path = save_synthesizer(
        tmp_path / "cls.safetensors", g, labels=TISSUE_LABELS, normalization=mni[2], classes=["T1w", "T2w"]
    )
    synth = Synthesizer.from_pretrained(path, device="cpu")
    labels = mni[1][:, 40:72, 50:82, 80]
    one = synth.generate(labels, seed=0, condition={"class": 1})
    assert torch.equal(synth.generate(labels, seed=0, condition={"class": np.int64(1)}).as_tensor(), one.as_tensor())
    for bad in (1.9, 0.5, 1.0, True, float("nan")):  # never truncated to an index
        with pytest.raises(MedganError, match="a class name or an integer index"):
            synth.generate(labels, seed=0, condition={"class": bad})
    with pytest.raises(MedganError, match="out of range"):
        synth.generate(labels, seed=0, condition={"class": 2})


def test_generate_refuses_maps_too_small_for_the_generator(shipped, mni):
    # 3 upsampling levels: the noise grid is 1/8 of the map, so some axis needs more than 8 voxels
    for crop in (mni[1][:, 60:63, 90:93, 80], mni[1][:, 60:63, 90:95, 80], mni[1][:, 60:68, 90:98, 80]):
        with pytest.raises(MedganError, match="too small for model 'brain-t1-tissue-2d'.*more than 8 voxels"):
            shipped.generate(crop, seed=1, condition={"scalar": 0.5})
    with pytest.raises(MedganError, match="each slice is \\(8, 8\\), too small"):
        shipped.generate(mni[1][:, 60:68, 90:98, 78:82], seed=1)
    with pytest.raises(MedganError, match="empty"):
        shipped.generate(mni[1][:, 60:60, 90:98, 80], seed=1, condition={"scalar": 0.5})
    assert shipped.generate(mni[1][:, 60:69, 90:98, 80], seed=1, condition={"scalar": 0.5}).shape == (1, 9, 8)


def test_generate_refuses_bad_seeds_and_counts(models, mni):
    synth = Synthesizer.from_pretrained(models["p2"], device="cpu")
    labels = mni[1][:, 40:72, 50:82, 80]
    for bad in (2**64, 99999999999999999999, -1):
        with pytest.raises(MedganError, match=r"seed must be an integer in 0\.\.2\*\*64-1"):
            synth.generate(labels, seed=bad)
    for bad in (1.5, True):
        with pytest.raises(MedganError, match="seed must be an integer"):
            synth.generate(labels, seed=bad)
    top = synth.generate(labels, seed=2**64 - 1)
    assert top.meta["medgan"]["seed"] == 2**64 - 1
    assert torch.equal(top.as_tensor(), synth.generate(labels, seed=np.uint64(2**64 - 1)).as_tensor())
    with pytest.raises(MedganError, match="n must be an integer"):
        synth.generate(labels, n=2.5, seed=1)
    with pytest.raises(MedganError, match="batch_size must be >= 1"):
        synth.generate(labels, seed=1, batch_size=0)


def test_synthesize_command_bad_input_is_one_line(mni, tmp_path, capsys):
    labels_path = medgan.save_scan(mni[1][:, 40:72, 50:82, 80], tmp_path / "labels.nii.gz")
    tiny_path = medgan.save_scan(mni[1][:, 60:63, 90:93, 80], tmp_path / "tiny.nii.gz")
    out = tmp_path / "syn.nii.gz"
    base = ["synthesize", "--model", "brain-t1-tissue-2d", "--out", str(out)]
    cases = [
        (["--labels", str(tiny_path), "--scalar", "0.5", "--seed", "1"], "too small"),
        (["--labels", str(labels_path), "--scalar", "0.5", "--seed", "99999999999999999999"], "seed must be"),
        (["--labels", str(labels_path), "--scalar", "nan", "--seed", "1"], "must be finite"),
        (["--labels", str(labels_path), "--scalar", "7", "--seed", "1"], r"must be in \[0, 1\]"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert cli_main([*base, *args]) == 1, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("medgan synthesize: error:") and len(err.splitlines()) == 1, err
        assert re.search(message, err), err
        assert not out.exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # a negative seed is refused by argparse, as in batch synthesize
        cli_main([*base, "--labels", str(labels_path), "--scalar", "0.5", "--seed", "-1"])
    assert exc.value.code == 2 and "--seed" in capsys.readouterr().err and not out.exists()
    # the top of the seed range and an in-range scalar work, and the sidecar records them
    assert cli_main([*base, "--labels", str(labels_path), "--scalar", "0.25", "--seed", str(2**64 - 1)]) == 0
    sidecar = json.loads((tmp_path / "syn.json").read_text())
    assert sidecar["condition"]["scalar"] == 0.25 and sidecar["seed"] == 2**64 - 1


def test_detect_refuses_non_finite_and_scores_only_non_constant_2d_images(mni):
    t1 = mni[0]
    det = SyntheticDetector.from_file(detect.DEFAULT_DETECTOR, device="cpu")
    real = t1[:, 20:132, 30:158, 80].as_tensor().clone()  # (1, X, Y) real MNI slice
    score = detect_synthetic(real, detector=det)
    assert 0.0 <= score <= 1.0
    for value in (float("nan"), float("inf")):
        bad = real.clone()
        bad[0, 5, 5] = value
        with pytest.raises(MedganError, match="NaN or infinite"):
            detect_synthetic(bad, detector=det)
        volume = t1[:, 20:132, 30:158, 78:82].as_tensor().clone()
        volume[0, 5, 5, 1] = value  # a volume no longer drops the slice silently
        with pytest.raises(MedganError, match="NaN or infinite"):
            detect_synthetic(volume, detector=det)
    # a constant 2-D image is empty, as a constant volume is
    for const in (torch.zeros_like(real), torch.ones_like(real), real[:, :1, :1]):
        with pytest.raises(MedganError, match="no non-empty slice"):
            detect_synthetic(const, detector=det)
    with pytest.raises(MedganError, match="no non-empty slice"):
        detect_synthetic(torch.ones(1, 32, 32, 4), detector=det)
    # a constant channel of a 2-D image is skipped: the score is the other channel's
    two = torch.cat([real, torch.zeros_like(real)])
    assert detect_synthetic(two, detector=det) == pytest.approx(score)
    with pytest.raises(MedganError, match="max_slices"):
        detect_synthetic(t1[:, 20:132, 30:158, 78:82], detector=det, max_slices=-1)
    with pytest.raises(MedganError, match="NaN or infinite"):
        detect.prepare_slices([real[0], torch.full_like(real[0], float("nan"))])


def test_a_samples_noise_does_not_depend_on_n(shipped, mni):
    """Torch's CPU randn fills blocks of 16 values and redraws a partial last block: drawn for all samples at once,
    sample 0's noise changed with n whenever one sample's noise (here 8 x 3 x 3 = 72 values) is not a multiple of 16."""
    labels = mni[1][:, 50:74, 60:84, 80]  # 24 x 24: a 3 x 3 noise grid
    assert shipped.model.noise_shape(labels.shape[1:]) == (8, 3, 3)
    cond = {"scalar": 0.5}
    one = shipped.generate(labels, n=1, seed=3, condition=cond)
    two = shipped.generate(labels, n=2, seed=3, condition=cond)
    three = shipped.generate(labels, n=3, seed=3, condition=cond, batch_size=2)
    assert torch.allclose(one[0], two[0], atol=1e-2) and torch.allclose(one[0], three[0], atol=1e-2)
    assert torch.allclose(two[1], three[1], atol=1e-2)
    # slice by slice too: sample 0 of a 3-slice volume is the same for n = 1 and n = 2
    volume = mni[1][:, 50:74, 60:84, 79:82]
    assert torch.allclose(shipped.generate(volume, n=1, seed=4)[0], shipped.generate(volume, n=2, seed=4)[0], atol=1e-2)


def test_a_single_slice_defaults_to_mid_volume_with_a_warning(shipped, mni, caplog):
    """k / (S - 1) is undefined for S == 1: a one-slice volume (how a single slice saved as a 3-D NIfTI comes back)
    was silently generated at position 0, the bottom of the brain, whatever slice it was (the mid-brain slice 90 of
    the MNI template came out 30 % further from the real T1 than at its own position). It was then refused, and so
    was a 2-D map, so the contract's ``generate(labels)`` failed on a 2-D map with the only shipped synthesis model.
    Now both take the middle of the volume, record it, and warn that the position should be given."""
    import logging

    t1, labels, _ = mni
    one = labels[:, :, :, 90:91]
    with caplog.at_level(logging.WARNING, logger="medgan"):
        default = shipped.generate(one, seed=3)
    assert "no relative slice position" in caplog.text and "conditions it on 0.5" in caplog.text
    assert default.meta["medgan"]["condition"]["scalar"] == 0.5
    mid = shipped.generate(one, seed=3, condition={"scalar": 0.5})
    assert torch.equal(default.as_tensor(), mid.as_tensor())
    position = 90 / (labels.shape[-1] - 1)
    given = shipped.generate(one, seed=3, condition={"scalar": position})
    assert given.shape == one.shape and given.meta["medgan"]["condition"]["scalar"] == position
    as_2d = shipped.generate(labels[:, :, :, 90], seed=3, condition={"scalar": position})
    assert torch.allclose(given.as_tensor()[..., 0], as_2d.as_tensor(), atol=1e-3)
    # the contract's call on a 2-D map: (n, X, Y) images with the map's affine, marked synthetic
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan"):
        plain = shipped.generate(labels[:, :, :, 90], n=2, seed=3)
    assert plain.shape == (2, *labels.shape[1:3]) and plain.meta["medgan"]["synthetic"] is True
    assert "no relative slice position" in caplog.text
    assert np.allclose(np.asarray(plain.affine), np.asarray(labels[:, :, :, 90].affine))
    # the mid-brain slice is closer to the real T1 at the default than at the bottom of the volume
    real = t1[0, :, :, 90].numpy()
    bottom = shipped.generate(labels[:, :, :, 90], seed=3, condition={"scalar": 0.0})[0].numpy()
    assert np.abs(plain[0].numpy() - real).mean() < np.abs(bottom - real).mean()
    # two or more slices still default to k / (S - 1), without the single-slice warning; so thin a slab is
    # warned about as a slab the positions are spread over
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan"):
        two = shipped.generate(labels[:, :, :, 90:92], seed=3)
    assert two.meta["medgan"]["condition"]["scalar"] == "slice_position"
    assert "no relative slice position" not in caplog.text and "spread over the given slab" in caplog.text


def test_a_condition_that_is_not_a_dict_is_a_medgan_error(shipped, mni):
    """condition=0.5 (the scalar without its key) raised dict()'s bare "TypeError: 'float' object is not iterable"."""
    labels = mni[1][:, :, :, 90]
    for bad in (0.5, "scalar", [0.5]):
        with pytest.raises(MedganError, match=r"condition must be a dict such as \{'scalar': 0.5\}"):
            shipped.generate(labels, seed=0, condition=bad)
    assert shipped.generate(labels, seed=0, condition={"scalar": 0.5}).shape == labels.shape


def test_a_2d_model_slices_a_volume_along_the_axis_it_was_trained_on(models, mni, tmp_path):
    """generate() sliced a 3-D map along axis 2 whatever the model learnt: a model trained on sagittal slices
    (training_data.slice_axis 0) silently generated axial ones. The recorded axis is now the default."""
    _, labels, norm = mni
    path = save_synthesizer(
        tmp_path / "sagittal.safetensors",
        models["g2"],
        labels=TISSUE_LABELS,
        normalization=norm,
        modality="MR",
        training_data={"slice_axis": 0},
    )
    synth = Synthesizer.from_pretrained(path, device="cpu")
    volume = labels[:, 60:64, 40:72, 50:82]  # 4 sagittal slices of the real MNI label map
    out = synth.generate(volume, seed=3)
    assert synth.training_slice_axis == 0 and out.meta["medgan"]["slice_axis"] == 0
    assert torch.equal(out.as_tensor(), synth.generate(volume, seed=3, axis=0).as_tensor())
    assert not torch.equal(out.as_tensor(), synth.generate(volume, seed=3, axis=2).as_tensor())
    assert Synthesizer.from_pretrained(models["p2"], device="cpu").training_slice_axis == 2  # not recorded: 2

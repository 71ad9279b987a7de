"""The synthetic-data side: 64-bit seeds, class names, real pairs on two grids, worker counts, the
modality of a cached synthetic label, and the edge cases of ``medgan.eval.synthetic``."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA, mni_label_map, save_tiny_synthesizer
from monai.data import DataLoader

import medgan
from medgan.data.cgan_data import _transform
from medgan.data.labels import deform_labels, one_hot
from medgan.data.normalize import Normalization
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, write_synthetic_cache
from medgan.errors import CheckpointError, MedganError
from medgan.eval.synthetic import nearest_neighbour, roc_auc
from medgan.infer.checkpoint import save_checkpoint
from medgan.infer.synthesis import Synthesizer, save_synthesizer
from medgan.io.scan import make_scan
from medgan.models.registry import build_generator

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
BOX = (slice(60, 76), slice(70, 86), slice(76, 80))  # 16 x 16 x 4 voxels of the MNI grid
NORM = Normalization(method="percentile", offset=0.0, scale=100.0, lower=0.5, upper=99.5, data_min=0.0, data_max=100.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_synthesizer(tmp_path_factory.mktemp("syn") / "tiny.safetensors")


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> tuple[Path, Path]:
    """A real (T1, label map) pair on one 16 x 16 x 4 crop of the MNI grid, as NIfTI files."""
    folder = tmp_path_factory.mktemp("mni")
    label = mni_label_map(folder / "labels.nii.gz", BOX)
    t1 = nib.load(MNI / "t1.nii.gz").slicer[BOX]
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32), t1.affine), folder / "t1.nii.gz")
    return folder / "t1.nii.gz", label


def _pairs(maps: tuple[Path, Path]) -> list[dict]:
    """Four 2-D (T1 slice, label slice) MetaTensor pairs; slicing keeps both on the crop's grid. The label maps say
    ``modality`` ``"SEG"``, as :func:`medgan.data.labels.tissue_labels` makes them."""
    t1, lab = (medgan.load_scan(p) for p in maps)
    lab.meta["modality"] = "SEG"
    return [{"image": t1[..., k], "label": lab[..., k]} for k in range(4)]


# ----------------------------------------------------------------------------------------------- 1: 64-bit seeds
def test_generate_seeds_do_not_alias_modulo_2_32(tiny, maps):
    synth = Synthesizer(tiny, device="cpu")
    lab = _pairs(maps)[1]["label"]
    one = synth.generate(lab, seed=1)
    assert not torch.equal(one.as_tensor(), synth.generate(lab, seed=1 + 2**32).as_tensor())
    assert not torch.equal(
        synth.generate(lab, seed=2**32 - 1).as_tensor(), synth.generate(lab, seed=2**64 - 1).as_tensor()
    )
    big = synth.generate(lab, seed=3 * 2**32 + 5, n=2)
    assert torch.equal(big.as_tensor(), synth.generate(lab, seed=3 * 2**32 + 5, n=2).as_tensor())  # reproducible
    # a sample's noise does not depend on n (the batch of 2 sums in another order: float32 rounding)
    assert torch.allclose(big[:1].as_tensor(), synth.generate(lab, seed=3 * 2**32 + 5).as_tensor(), rtol=0, atol=1e-4)
    assert big.meta["medgan"]["seed"] == 3 * 2**32 + 5


def test_seeds_below_2_32_keep_their_torch_noise(tiny, maps):
    """Existing outputs stay bit-identical: a seed below 2**32 is torch's generator, one draw per sample."""
    synth = Synthesizer(tiny, device="cpu")
    lab = _pairs(maps)[1]["label"]
    for seed in (0, 7, 2**32 - 1):
        got = synth.generate(lab, seed=seed, n=2)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.cat([torch.randn((1, *synth.model.noise_shape(lab.shape[1:])), generator=gen) for _ in range(2)])
        with torch.inference_mode():
            y = synth.model(one_hot(lab, sorted(synth.labels)).expand(2, -1, -1, -1), z, None, None)[:, 0]
        expected = torch.as_tensor(synth.normalization.invert(y.float(), clip_to="fit"), dtype=torch.float32)
        assert torch.equal(got.as_tensor(), expected)


def test_deform_labels_seeds_do_not_alias_modulo_2_32(maps):
    lab = _pairs(maps)[2]["label"]
    one = deform_labels(lab, seed=1)
    big = deform_labels(lab, seed=1 + 2**32)
    assert not torch.equal(one.as_tensor(), big.as_tensor())
    assert big.meta["label_deformation"]["seed"] == 1 + 2**32  # the seed given, not 1
    assert torch.equal(big.as_tensor(), deform_labels(lab, seed=1 + 2**32).as_tensor())
    assert set(torch.unique(big.as_tensor()).tolist()) <= set(torch.unique(lab.as_tensor()).tolist())
    # below 2**32 the deformation is MONAI's seeded one, as before
    xform = _transform(lab.shape[1:], True, True, "nearest")
    xform.set_random_state(seed=5)
    assert torch.equal(deform_labels(lab, seed=5).as_tensor(), torch.round(xform(lab.as_tensor().float()).float()))
    with pytest.raises(MedganError, match="non-negative"):  # -1 aliased 2**32 - 1
        deform_labels(lab, seed=-1)


# ---------------------------------------------------------------------------------------- 2: classes vs num_classes
def _class_generator():
    torch.manual_seed(0)
    cfg = {"arch": "spade", "spatial_dims": 2, "num_labels": 3, "channels": [8, 4], "z_dim": 4}
    return build_generator({**cfg, "spade_hidden_channels": 4, "num_classes": 3})


LABELS = {0: "background", 1: "gm", 2: "wm"}


def test_save_synthesizer_refuses_classes_other_than_num_classes(tmp_path, maps):
    for classes in (["a", "b"], ["a", "b", "c", "d"], ["a", "b", "a"]):
        with pytest.raises(ValueError, match="class names"):
            save_synthesizer(
                tmp_path / "c.safetensors", _class_generator(), labels=LABELS, normalization=NORM, classes=classes
            )
    assert not (tmp_path / "c.safetensors").exists()
    path = save_synthesizer(
        tmp_path / "ok.safetensors", _class_generator(), labels=LABELS, normalization=NORM, classes=["a", "b", "c"]
    )
    out = Synthesizer(path, device="cpu").generate(_pairs(maps)[0]["label"], seed=0, condition={"class": 2})
    assert out.meta["medgan"]["condition"]["class"] == "c"


def test_synthesizer_refuses_a_checkpoint_with_mismatched_classes(tmp_path, maps):
    """A checkpoint written before the check: refused when loaded, not with a bare IndexError at generation."""
    for classes in (["a", "b"], ["a", "b", "c", "d"]):
        path = save_checkpoint(
            tmp_path / f"c{len(classes)}.safetensors",
            _class_generator(),
            normalization=NORM,
            extra={"task": "synthesis", "labels": {str(k): v for k, v in LABELS.items()}, "classes": classes},
        )
        with pytest.raises(CheckpointError, match="num_classes=3"):
            Synthesizer(path, device="cpu")


# ------------------------------------------------------------------------------------- 3: real pairs on two grids
def test_real_pair_on_another_grid_is_refused(maps):
    pair = _pairs(maps)[1]
    lab = pair["label"]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, lab.shape[1] - 1
    # the same label mirrored in x, with the affine that says so: a correct scan, on another grid than the image
    mirrored = make_scan(torch.flip(lab.as_tensor(), dims=[1]), np.asarray(lab.affine, dtype=np.float64) @ flip)
    ds = SyntheticAugmentedDataset([{"image": pair["image"], "label": mirrored}], ratio=0.0)
    with pytest.raises(MedganError, match="different grids"):
        ds[0]
    # the aligned pair, and a plain-array label (no affine of its own), are served
    assert torch.equal(SyntheticAugmentedDataset([pair], ratio=0.0)[0]["label"].as_tensor(), lab.as_tensor())
    plain = SyntheticAugmentedDataset([{"image": pair["image"], "label": lab.as_tensor().numpy()}], ratio=0.0)
    assert plain[0]["label"].shape == lab.shape


# ------------------------------------------------------------------------------------------------ 4: worker counts
def test_worker_count_changes_synthetic_images_only_within_rounding(tiny, maps):
    """What the module docstring guarantees: labels and real items bit-identical in any number of workers,
    synthetic images within float32 rounding (workers run torch on one thread)."""
    ds = SyntheticAugmentedDataset(_pairs(maps), synthesizer=Synthesizer(tiny, device="cpu"), ratio=0.5, seed=0)

    def items(workers: int) -> dict[int, tuple[torch.Tensor, torch.Tensor, bool]]:
        out = {}
        for batch in DataLoader(ds, batch_size=4, num_workers=workers):
            for i, index in enumerate(batch["index"].tolist()):
                out[index] = (batch["image"][i].as_tensor(), batch["label"][i].as_tensor(), bool(batch["synthetic"][i]))
        return out

    single, workers = items(0), items(2)
    assert sorted(single) == sorted(workers) == list(range(len(ds)))
    assert sum(s for _, _, s in single.values()) == ds.n_synthetic == 4
    for index, (image, label, synthetic) in single.items():
        assert torch.equal(label, workers[index][1])
        if synthetic:  # the tiny model's images span 0..100
            assert torch.allclose(image, workers[index][0], rtol=0, atol=1e-3)
        else:
            assert torch.equal(image, workers[index][0])


# ------------------------------------------------------------------------------- 5: modality of a synthetic label
def test_cached_synthetic_label_has_the_generated_modality(tmp_path, tiny, maps):
    synth = Synthesizer(tiny, device="cpu")
    pairs = _pairs(maps)
    write_synthetic_cache(synth, [p["label"] for p in pairs], tmp_path / "cache", n=2, seed=0)
    only = SyntheticAugmentedDataset([], cache_dir=tmp_path / "cache", ratio=1.0, length=2, seed=0)
    fly = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=1.0, length=2, seed=0)
    through = SyntheticAugmentedDataset(pairs, synthesizer=synth, cache_dir=tmp_path / "cache", ratio=1.0, length=2)
    for i in range(2):
        a, b, c = only[i], fly[i], through[i]
        # the source maps' modality (tissue_labels: SEG), whether generated, written through or read from the cache
        assert a["label"].meta["modality"] == b["label"].meta["modality"] == c["label"].meta["modality"] == "SEG"
        assert a["image"].meta["modality"] == b["image"].meta["modality"] == c["image"].meta["modality"]


# ------------------------------------------------------------------------------ 6: medgan.eval.synthetic edge cases
def test_roc_auc_refuses_nan_scores():
    with pytest.raises(MedganError, match="NaN"):
        roc_auc([0.1, math.nan], [0.9, 0.8])
    with pytest.raises(MedganError, match="NaN"):
        roc_auc([0.1, 0.2], [math.nan])
    assert roc_auc([0.1, -math.inf], [0.9, math.inf]) == 1.0  # an infinite score still ranks


def test_nearest_neighbour_without_queries_or_reference():
    dist, index = nearest_neighbour(np.zeros((0, 8, 8)), np.zeros((3, 8, 8)))
    assert dist.shape == index.shape == (0,)
    assert dist.dtype == np.float64 and index.dtype == np.int64
    with pytest.raises(MedganError, match="do not match"):
        nearest_neighbour(np.zeros((2, 8, 8)), np.zeros((0, 8, 8)))
    dist, index = nearest_neighbour(np.ones((2, 4)), np.stack([np.zeros(4), np.ones(4)]), metric="l2")
    assert dist.tolist() == [0.0, 0.0] and index.tolist() == [1, 1]


def test_deform_pair_deforms_image_and_label_alike_for_seeds_above_2_32():
    """deform_pair seeded its image transform modulo 2**32 while deform_labels (its label half) uses every bit of
    the seed: for seeds >= 2**32 image and label were deformed differently."""
    from medgan.data.cgan_data import deform_pair

    labels = np.zeros((1, 32, 32), dtype=np.float32)
    labels[0, 8:20, 10:24] = 1
    image = labels * 100.0
    seed = 5 + 2**32
    img, lab = deform_pair(image, labels, seed=seed)
    from scipy.ndimage import binary_erosion

    inside = binary_erosion(lab[0] == 1, iterations=2)  # away from the bilinear image's blurred edge
    outside = binary_erosion(lab[0] == 0, iterations=2)
    assert inside.sum() > 20
    np.testing.assert_allclose(img[0][inside], 100.0, atol=1.0)  # the square moved with its label
    np.testing.assert_allclose(img[0][outside], 0.0, atol=1.0)

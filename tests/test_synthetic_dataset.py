"""The real + synthetic augmentation dataset: ratio, determinism, MONAI DataLoader, cache folder, a UNet step."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader
from monai.networks.nets import UNet
from monai.transforms import AsDiscreted, Compose, ScaleIntensityRanged

import medgan
from medgan.data.labels import TISSUE_LABELS, tissue_labels
from medgan.data.normalize import fit_normalization
from medgan.data.synthetic_dataset import SyntheticAugmentedDataset, cache_key, cache_names, write_synthetic_cache
from medgan.errors import MedganError
from medgan.infer.synthesis import Synthesizer, save_synthesizer
from medgan.io.scan import make_scan
from medgan.models.registry import build_cgan_generator

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four real 32 x 32 axial (T1, tissue label) pairs from the MNI template, and a tiny 2-D synthesizer."""
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    pairs = []
    for k in (60, 75, 90, 105):
        img = F.interpolate(t1.as_tensor()[None, :, :, :, k], size=(32, 32), mode="area")[0]
        lab = F.interpolate(labels.as_tensor()[None, :, :, :, k], size=(32, 32), mode="nearest")[0]
        affine = np.diag([155 / 32, 192 / 32, 1.0, 1.0])
        pairs.append(
            {"image": make_scan(img, affine, {"filename_or_obj": f"mni_t1_z{k}"}), "label": make_scan(lab, affine)}
        )
    torch.manual_seed(0)
    g = build_cgan_generator({"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8})
    norm = fit_normalization(t1, method="percentile", lower=0.0, upper=99.5)
    path = save_synthesizer(
        tmp_path_factory.mktemp("aug") / "tiny.safetensors", g, labels=TISSUE_LABELS, normalization=norm
    )
    return pairs, Synthesizer.from_pretrained(path, device="cpu")


def test_ratio_layout_and_items(setup):
    pairs, synth = setup
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=0)
    assert len(ds) == 8 and ds.n_synthetic == 4
    flags = [ds[i]["synthetic"] for i in range(len(ds))]
    assert sum(flags) == 4
    real_items = [ds[i] for i in range(len(ds)) if not flags[i]]
    assert sorted(it["image"].meta["filename_or_obj"] for it in real_items) == sorted(
        p["image"].meta["filename_or_obj"] for p in pairs
    )  # every real pair exactly once
    syn = next(ds[i] for i in range(len(ds)) if flags[i])
    assert syn["image"].shape == (1, 32, 32) and syn["label"].shape == (1, 32, 32)
    assert syn["image"].meta["synthetic"] is True and real_items[0]["image"].meta["synthetic"] is False
    assert set(np.unique(np.asarray(syn["label"]))) <= {0.0, 1.0, 2.0, 3.0}
    ds2 = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.75, length=20, seed=0)
    assert sum(ds2[i]["synthetic"] for i in range(20)) == 15


def test_deterministic_under_a_seed_and_new_pairs_per_epoch(setup):
    pairs, synth = setup
    a = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=7)
    b = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=7)
    k = int(np.flatnonzero(a.is_synthetic)[0])
    assert torch.equal(a[k]["image"].as_tensor(), b[k]["image"].as_tensor())
    assert torch.equal(a[k]["label"].as_tensor(), b[k]["label"].as_tensor())
    # the synthetic label is a deformed real map, not a copy
    src = pairs[0]["label"].as_tensor()
    assert not torch.equal(a[k]["label"].as_tensor(), src)
    before = a[k]["image"].as_tensor().clone()
    a.set_epoch(1)
    assert not torch.equal(a[k]["image"].as_tensor(), before)
    assert np.array_equal(a.is_synthetic, b.is_synthetic)  # the layout stays


def test_plugs_into_monai_dataloader_and_trains_a_unet_step(setup):
    pairs, synth = setup
    transform = Compose(
        [
            ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
            AsDiscreted("label", to_onehot=4),
        ]
    )
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, length=8, seed=1, transform=transform)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)
    net = UNet(2, 1, 4, channels=(4, 8), strides=(2,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    flags = []
    for batch in loader:
        assert batch["image"].shape == (4, 1, 32, 32) and batch["label"].shape == (4, 4, 32, 32)
        flags += batch["synthetic"].tolist()
        loss = F.cross_entropy(net(batch["image"]), batch["label"].argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert sum(flags) == 4 and len(flags) == 8


def test_cache_folder(setup, tmp_path):
    pairs, synth = setup
    written = write_synthetic_cache(synth, [p["label"] for p in pairs], tmp_path, n=3, seed=2)
    keys = [cache_key(synth, source=k, label=pairs[k]["label"], deform=True) for k in range(3)]
    assert [w[0].name for w in written] == [cache_names(2, k, keys[k])[0] for k in range(3)]
    ds = SyntheticAugmentedDataset(pairs, cache_dir=tmp_path, ratio=0.5, seed=0)
    syn = [ds[i] for i in range(len(ds)) if ds.is_synthetic[i]]
    assert len(syn) == 4 and all(s["image"].shape == (1, 32, 32) for s in syn)
    cached = medgan.load_scan(written[0][0])
    assert cached.shape == (1, 32, 32)  # a 2-D image stays 2-D through NIfTI
    assert any(torch.allclose(s["image"].as_tensor(), cached.as_tensor()) for s in syn)
    # write-through: on-the-fly items of epoch 0 land in the cache and are read back identically
    through = tmp_path / "through"
    live = SyntheticAugmentedDataset(pairs, synthesizer=synth, cache_dir=through, ratio=0.5, seed=5)
    k = int(np.flatnonzero(live.is_synthetic)[0])
    first = live[k]["image"].as_tensor().clone()
    assert (through / cache_names(5, 0, cache_key(synth, source=0, label=pairs[0]["label"]))[0]).is_file()
    assert torch.allclose(live[k]["image"].as_tensor(), first, atol=1e-5)


def test_errors(setup, tmp_path):
    pairs, synth = setup
    with pytest.raises(MedganError, match="synthesizer or a cache_dir"):
        SyntheticAugmentedDataset(pairs, ratio=0.5)
    with pytest.raises(MedganError, match="ratio"):
        SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=1.5)
    with pytest.raises(MedganError, match="no synthetic pairs"):
        SyntheticAugmentedDataset(pairs, cache_dir=tmp_path, ratio=0.5)
    with pytest.raises(MedganError, match="'image' and 'label'"):
        SyntheticAugmentedDataset([{"image": pairs[0]["image"]}], synthesizer=synth)
    only_real = SyntheticAugmentedDataset(pairs, ratio=0.0)
    assert len(only_real) == 4 and not any(only_real[i]["synthetic"] for i in range(4))


# ---------------------------------------------------------------- review fixes: keyed cache, epochs in workers
@pytest.fixture(scope="module")
def scalar_synth(setup, tmp_path_factory):
    """A tiny slice-position-conditioned 2-D synthesizer (modality MR) and another one with other weights."""
    torch.manual_seed(1)
    cfg = {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8, "scalar_condition": True}
    norm = {"method": "percentile", "offset": 0.0, "scale": 100.0, "lower": 0.0, "upper": 99.5}
    folder = tmp_path_factory.mktemp("scalar")
    synths = []
    for name in ("a", "b"):
        path = save_synthesizer(
            folder / f"{name}.safetensors",
            build_cgan_generator(cfg),
            labels=TISSUE_LABELS,
            normalization=norm,
            modality="MR",
            scalar_condition="slice_position",
        )
        synths.append(Synthesizer.from_pretrained(path, device="cpu"))
    return synths


def _first_synthetic(ds: SyntheticAugmentedDataset) -> dict:
    return ds[int(np.flatnonzero(ds.is_synthetic)[0])]


def test_write_through_cache_never_serves_another_settings_images(setup, scalar_synth, tmp_path):
    pairs, _ = setup
    synth_a, synth_b = scalar_synth
    cache = tmp_path / "cache"
    base = {"ratio": 0.5, "seed": 3}
    first = _first_synthetic(
        SyntheticAugmentedDataset(pairs, synthesizer=synth_a, cache_dir=cache, condition={"scalar": 0.1}, **base)
    )
    variants = [
        {"synthesizer": synth_a, "condition": {"scalar": 0.9}},  # another condition
        {"synthesizer": synth_b, "condition": {"scalar": 0.1}},  # another checkpoint
        {"synthesizer": synth_a, "condition": {"scalar": 0.1}, "deform_kwargs": {"elastic": False}},
        {"synthesizer": synth_a, "condition": {"scalar": 0.1}, "deform": False},
    ]
    for variant in variants:
        cached = _first_synthetic(SyntheticAugmentedDataset(pairs, cache_dir=cache, **variant, **base))
        fresh = _first_synthetic(SyntheticAugmentedDataset(pairs, **variant, **base))
        assert torch.equal(cached["image"].as_tensor(), fresh["image"].as_tensor()), variant
        assert torch.equal(cached["label"].as_tensor(), fresh["label"].as_tensor()), variant
        assert not torch.equal(cached["image"].as_tensor(), first["image"].as_tensor()), variant
    # another real map at the same index (the pairs reordered): its own deformation, not the cached one
    moved = [pairs[1], pairs[0], *pairs[2:]]
    cond = {"synthesizer": synth_a, "condition": {"scalar": 0.1}}
    cached = _first_synthetic(SyntheticAugmentedDataset(moved, cache_dir=cache, **cond, **base))
    fresh = _first_synthetic(SyntheticAugmentedDataset(moved, **cond, **base))
    assert torch.equal(cached["label"].as_tensor(), fresh["label"].as_tensor())
    # the same settings again: read back from the cache, identical
    again = _first_synthetic(SyntheticAugmentedDataset(pairs, cache_dir=cache, **cond, **base))
    assert torch.equal(again["image"].as_tensor(), first["image"].as_tensor())


def test_cache_hit_matches_the_miss(setup, scalar_synth, tmp_path):
    pairs, _ = setup
    ds = SyntheticAugmentedDataset(
        pairs, synthesizer=scalar_synth[0], cache_dir=tmp_path, ratio=0.5, seed=4, condition={"scalar": 0.5}
    )
    miss = _first_synthetic(ds)
    hit = _first_synthetic(ds)
    assert any(tmp_path.glob("*_image.nii.gz"))
    for key in ("image", "label"):
        assert torch.equal(miss[key].as_tensor(), hit[key].as_tensor())
        assert np.array_equal(np.asarray(miss[key].affine), np.asarray(hit[key].affine))
        assert {k: v for k, v in miss[key].meta.items() if k != "affine"} == {
            k: v for k, v in hit[key].meta.items() if k != "affine"
        }
    assert miss["image"].meta["modality"] == hit["image"].meta["modality"] == "MR"
    assert miss["label"].meta["modality"] == hit["label"].meta["modality"] == "unknown"


def test_write_synthetic_cache_rerun_with_other_settings_writes_new_pairs(setup, scalar_synth, tmp_path):
    pairs, _ = setup
    maps = [p["label"] for p in pairs]
    low = write_synthetic_cache(scalar_synth[0], maps, tmp_path, n=2, seed=0, condition={"scalar": 0.1})
    high = write_synthetic_cache(scalar_synth[0], maps, tmp_path, n=2, seed=0, condition={"scalar": 0.9})
    assert {p for pair in low for p in pair}.isdisjoint({p for pair in high for p in pair})
    a, b = medgan.load_scan(low[0][0]), medgan.load_scan(high[0][0])
    assert not torch.equal(a.as_tensor(), b.as_tensor())
    assert json.loads(high[0][0].with_name(high[0][0].name.replace(".nii.gz", ".json")).read_text())["condition"] == {
        "class": None,
        "scalar": 0.9,
    }
    # the folder serves as the dataset's write-through cache for the same settings (same pair, no regeneration)
    ds = SyntheticAugmentedDataset(
        pairs, synthesizer=scalar_synth[0], cache_dir=tmp_path, ratio=0.5, seed=0, condition={"scalar": 0.9}
    )
    assert torch.equal(_first_synthetic(ds)["image"].as_tensor()[0], b.as_tensor()[0])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_set_epoch_reaches_persistent_workers(setup, context):
    pairs, synth = setup
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=3)
    syn = torch.as_tensor(ds.is_synthetic)
    expected = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        expected.append(torch.stack([ds[i]["image"].as_tensor() for i in range(len(ds))]))
    assert not torch.equal(expected[0][syn], expected[1][syn])
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, persistent_workers=True, multiprocessing_context=context)
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        (batch,) = list(loader)
        assert torch.equal(batch["image"].as_tensor(), expected[epoch]), epoch
    copied = copy.deepcopy(ds)  # a copy (not a worker) has its own epoch
    copied.set_epoch(5)
    assert ds.epoch == 0 and copied.epoch == 5


@pytest.mark.parametrize(("n_real", "ratio"), [(4, 0.1), (3, 0.1), (1, 0.25)])
def test_default_length_has_every_real_pair_once_plus_synthetic_ones(setup, n_real, ratio):
    """length=None is ceil(len(real) / (1 - ratio)): the real slots are the real pairs, once each, and the rest are
    synthetic (round(length * ratio) gave 4 real pairs at ratio 0.1 five real slots, one pair twice, no synthetic)."""
    pairs, synth = setup
    ds = SyntheticAugmentedDataset(pairs[:n_real], synthesizer=synth, ratio=ratio, seed=0)
    assert len(ds) == int(np.ceil(n_real / (1 - ratio)))
    assert ds.n_synthetic == len(ds) - n_real >= 1 and int(ds.is_synthetic.sum()) == ds.n_synthetic
    real = [ds[i]["image"].meta["filename_or_obj"] for i in np.flatnonzero(~ds.is_synthetic)]
    assert sorted(real) == sorted(p["image"].meta["filename_or_obj"] for p in pairs[:n_real])


def test_transforms_never_change_the_given_pairs(setup):
    """An in-place MONAI transform (RandCoarseDropoutd fills holes in its input) works on the item, not on the real
    pairs the dataset holds: they stay as given, so a later epoch (and every synthetic label drawn from them) is
    unchanged."""
    from monai.transforms import RandCoarseDropoutd

    pairs, synth = setup
    pairs = [{k: v.clone() for k, v in p.items()} for p in pairs]
    before = [{k: v.clone() for k, v in p.items()} for p in pairs]
    drop = RandCoarseDropoutd(["image", "label"], holes=4, spatial_size=6, fill_value=0, prob=1.0)
    for deform in (True, False):
        ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=0, deform=deform, transform=drop)
        for i in range(len(ds)):
            ds[i]
    for p, b in zip(pairs, before, strict=True):
        assert torch.equal(p["image"].as_tensor(), b["image"].as_tensor())
        assert torch.equal(p["label"].as_tensor(), b["label"].as_tensor())


def test_negative_seed_or_epoch_is_a_medgan_error(setup):
    pairs, synth = setup
    with pytest.raises(MedganError, match="seed must be a non-negative integer"):
        SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=-1)
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=0)
    with pytest.raises(MedganError, match="epoch must be a non-negative integer"):
        ds.set_epoch(-1)
    assert ds.epoch == 0


def test_fewer_slots_than_real_pairs_still_use_every_pair(setup):
    """length=4 at ratio 0.5 over 4 real pairs: 2 real slots and 2 synthetic items per epoch. Each slot took pair
    ``rank % 4`` in every epoch, so pairs 2 and 3 were never seen (nor deformed) however long one trained; now each
    epoch carries on where the last one stopped."""
    pairs, synth = setup
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, length=4, seed=0, deform=False)
    names = [p["image"].meta["filename_or_obj"] for p in pairs]
    real_seen, maps_seen = [], []
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            if item["synthetic"]:  # deform=False: the label is the source map itself
                maps_seen += [j for j, p in enumerate(pairs) if torch.equal(item["label"].as_tensor(), p["label"])]
            else:
                real_seen.append(names.index(item["image"].meta["filename_or_obj"]))
    assert sorted(real_seen) == [0, 1, 2, 3] and sorted(maps_seen) == [0, 1, 2, 3]
    # the default length (each real pair once per epoch) keeps its layout in every epoch
    full = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=0)
    real_slots = np.flatnonzero(~full.is_synthetic)
    first = [full[int(i)]["image"].meta["filename_or_obj"] for i in real_slots]
    full.set_epoch(3)
    assert [full[int(i)]["image"].meta["filename_or_obj"] for i in real_slots] == first


def test_synthetic_items_keep_their_provenance_through_batches_and_save_scan(setup, scalar_synth, tmp_path):
    """A synthetic item's image and label lost ``meta["medgan"]`` (model, sha256, seed, condition, deformation):
    ``save_scan`` of an item wrote an unmarked image. Items now keep it, a batch of synthetic items still collates
    (torch's default collate stopped at the condition's ``{"class": None}``), and ``decollate_batch`` gives each
    item its own record back."""
    from monai.data import decollate_batch

    pairs, _ = setup
    synth = scalar_synth[0]
    ds = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=1.0, length=4, seed=2, condition={"scalar": 0.4})
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        image, label = item["image"].meta["medgan"], item["label"].meta["medgan"]
        assert image["synthetic"] is True and image["model_sha256"] == synth.sha256
        assert image["condition"] == {"class": None, "scalar": 0.4} and image["label_deformation"]["seed"] >= 0
        assert label["synthetic"] is True and label["task"] == "label-deformation"
    assert len({item["image"].meta["medgan"]["seed"] for item in items}) == 4  # one noise seed per item
    saved = medgan.load_scan(medgan.save_scan(items[0]["image"], tmp_path / "item.nii.gz"))
    assert saved.meta["medgan"]["synthetic"] is True and saved.meta["medgan"] == items[0]["image"].meta["medgan"]
    batches = list(DataLoader(ds, batch_size=2, shuffle=False, num_workers=0))
    assert batches[0]["image"].meta["medgan"]["seed"] == [
        items[0]["image"].meta["medgan"]["seed"],
        items[1]["image"].meta["medgan"]["seed"],
    ]
    back = [item for batch in batches for item in decollate_batch(batch)]
    for item, original in zip(back, items, strict=True):
        for key in ("image", "label"):
            assert item[key].meta["medgan"] == original[key].meta["medgan"]
    saved = medgan.load_scan(medgan.save_scan(back[3]["image"], tmp_path / "decollated.nii.gz"))
    assert saved.meta["medgan"]["seed"] == items[3]["image"].meta["medgan"]["seed"]
    # a batch mixing real and synthetic items keeps the record (real items carry one that marks them real)
    mixed = SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, seed=2, condition={"scalar": 0.4})
    batch = next(iter(DataLoader(mixed, batch_size=len(mixed), num_workers=0)))
    assert batch["image"].meta["medgan"]["synthetic"] == batch["synthetic"].tolist()
    assert batch["synthetic"].any() and not batch["synthetic"].all()


def test_a_condition_that_is_not_a_dict_is_a_medgan_error(setup, scalar_synth, tmp_path):
    """condition=0.5 raised dict()'s bare "TypeError: 'float' object is not iterable" from the constructor and from
    write_synthetic_cache."""
    pairs, _ = setup
    for bad in (0.5, "scalar", [0.5]):
        with pytest.raises(MedganError, match="condition must be a dict"):
            SyntheticAugmentedDataset(pairs, synthesizer=scalar_synth[0], ratio=0.5, condition=bad)
        with pytest.raises(MedganError, match="condition must be a dict"):
            write_synthetic_cache(scalar_synth[0], [pairs[0]["label"]], tmp_path, n=1, condition=bad)
    assert not any(tmp_path.iterdir())


def test_length_must_be_a_non_negative_integer(setup):
    """length=-3 reached NumPy (np.zeros(-3)) as a bare "ValueError: negative dimensions are not allowed"; length=2.7
    was silently truncated to 2 items."""
    pairs, synth = setup
    for bad in (-3, 2.7, "8", True):
        with pytest.raises(MedganError, match="length must be a non-negative integer"):
            SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, length=bad)
    assert len(SyntheticAugmentedDataset(pairs, synthesizer=synth, ratio=0.5, length=np.int64(6))) == 6


# ---------------------------------------------------------------- per-pair conditions
@pytest.fixture(scope="module")
def mni_slices():
    """Full-resolution axial (T1, tissue label) slices 30 and 120 of the MNI template (the shipped model's training
    subject), each with its relative slice position ``k / (Z - 1)``."""
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    n_slices = labels.shape[-1]
    return [(t1[..., k], labels[..., k], k / (n_slices - 1)) for k in (30, 120)]


def _brain_error(item: dict, real_image: torch.Tensor, real_label: torch.Tensor) -> float:
    """Mean absolute difference (raw T1 units, 0-255) of a generated image and the real slice, inside the brain."""
    brain = real_label.as_tensor()[0] > 0
    return float((item["image"].as_tensor()[0] - real_image.as_tensor()[0]).abs()[brain].mean())


def test_a_pairs_own_condition_generates_the_items_that_deform_its_label_map(mni_slices):
    """One ``condition`` was used for every synthetic item, whatever slice it came from: the shipped slice-position
    model rendered every slice at one position. A pair's own ``"condition"`` now generates its items, over the
    dataset-wide one, and the provenance records it.

    Measured (shipped ``brain-t1-tissue-2d``, undeformed maps, the dataset's seeds): mean absolute error (0-255)
    inside the brain against the real slice, slice 30 at its own position 0.188: 16.6, at slice 120's 0.75: 19.8;
    slice 120 at its own 0.75: 14.2, at slice 30's 0.188: 14.5; mean 15.4 vs 17.2. The model's position
    conditioning matters most for inferior slices and is not monotonic (at position 0.0, slice 90 measured 18.2
    against 14.6 at its own 0.562, but 14.2 at 0.5)."""
    shipped = Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    pairs = [{"image": img, "label": lab, "condition": {"scalar": pos}} for img, lab, pos in mni_slices]
    common = {"synthesizer": shipped, "ratio": 1.0, "length": 4, "seed": 0, "deform": False}
    ds = SyntheticAugmentedDataset(pairs, condition={"scalar": 0.5}, **common)  # the pairs' own keys win
    own_errors = [[], []]
    for i in range(len(ds)):
        item, j = ds[i], i % 2  # epoch 0, all synthetic: item i deforms pair i % 2
        _, label, pos = mni_slices[j]
        assert set(item) == {"image", "label", "synthetic", "index"}  # the pair's condition is not an item key
        record = item["image"].meta["medgan"]
        assert record["condition"] == {"class": None, "scalar": pos}
        expected = shipped.generate(label, n=1, seed=record["seed"], condition={"scalar": pos})
        assert torch.equal(item["image"].as_tensor(), expected.as_tensor())
        own_errors[j].append(_brain_error(item, *mni_slices[j][:2]))
    # one dataset-wide condition for both: each slice rendered at the other slice's position
    plain = [{"image": img, "label": lab} for img, lab, _ in mni_slices]
    wrong_errors = []
    for j, other in ((0, 1), (1, 0)):
        single = SyntheticAugmentedDataset(plain, condition={"scalar": mni_slices[other][2]}, **common)
        wrong_errors.append([_brain_error(single[i], *mni_slices[j][:2]) for i in range(j, len(single), 2)])
    own, wrong = float(np.mean(own_errors)), float(np.mean(wrong_errors))
    print(f"own positions {np.mean(own_errors, axis=1)}, one wrong position {np.mean(wrong_errors, axis=1)}")
    assert own < 0.95 * wrong, (own, wrong)


def test_per_pair_conditions_key_the_cache_and_collate(setup, scalar_synth, tmp_path):
    """The cache key held only the dataset-wide condition, and ``write_synthetic_cache`` had no way to give one per
    label map: a cache must never serve a pair generated under another pair condition. The key is that of the
    condition used (the merge), so caches without per-pair conditions keep their keys."""
    from monai.data import decollate_batch

    pairs, _ = setup
    synth = scalar_synth[0]
    positions = [0.1, 0.3, 0.6, 0.9]
    own = [{**p, "condition": {"scalar": s}} for p, s in zip(pairs, positions, strict=True)]
    maps = [p["label"] for p in pairs]
    base = {"synthesizer": synth, "ratio": 1.0, "length": 4, "seed": 0}
    # write_synthetic_cache with one condition per map is the dataset's write-through cache: read back, identical
    written = write_synthetic_cache(synth, maps, tmp_path, n=4, seed=0, conditions=[{"scalar": s} for s in positions])
    for k, (img_path, _) in enumerate(written):
        key = cache_key(synth, source=k, label=maps[k], condition={"scalar": positions[k]})
        assert img_path.name == cache_names(0, k, key)[0]
    fresh = SyntheticAugmentedDataset(own, **base)
    cached = SyntheticAugmentedDataset(own, cache_dir=tmp_path, **base)
    for i in range(4):
        assert torch.equal(cached[i]["image"].as_tensor(), medgan.load_scan(written[i][0]).as_tensor())
        assert torch.equal(cached[i]["image"].as_tensor(), fresh[i]["image"].as_tensor())
        assert cached[i]["image"].meta["medgan"]["condition"]["scalar"] == positions[i]
    n_files = len(list(tmp_path.iterdir()))
    # other pair conditions over the same cache: generated under their own condition, never served these files
    swapped = [{**p, "condition": {"scalar": s}} for p, s in zip(pairs, positions[::-1], strict=True)]
    other = SyntheticAugmentedDataset(swapped, cache_dir=tmp_path, **base)
    for i in range(4):
        assert torch.equal(
            other[i]["image"].as_tensor(), SyntheticAugmentedDataset(swapped, **base)[i]["image"].as_tensor()
        )
        assert not torch.equal(other[i]["image"].as_tensor(), cached[i]["image"].as_tensor())
    assert len(list(tmp_path.iterdir())) > n_files
    # a pair condition equal to the dataset-wide one: the same key as a cache written without per-pair conditions
    same = [{**p, "condition": {"scalar": 0.9}} for p in pairs]
    plain = write_synthetic_cache(synth, maps, tmp_path / "plain", n=2, seed=0, condition={"scalar": 0.9})
    via_pairs = write_synthetic_cache(synth, maps, tmp_path / "pairs", n=2, seed=0, conditions=[{"scalar": 0.9}] * 4)
    assert [p[0].name for p in plain] == [p[0].name for p in via_pairs]
    ds = SyntheticAugmentedDataset(same, cache_dir=tmp_path / "plain", **base)
    assert torch.equal(ds[0]["image"].as_tensor(), medgan.load_scan(plain[0][0]).as_tensor())
    # merge: the pair's keys win over the dataset-wide ones, the others stay
    merged = SyntheticAugmentedDataset(own, condition={"scalar": 0.5, "class": None}, **base)
    assert merged.conditions == [{"scalar": s, "class": None} for s in positions]
    # a batch collates to the item keys only, with each item's condition in its provenance
    batch = next(iter(DataLoader(fresh, batch_size=4, num_workers=0)))
    assert set(batch) == {"image", "label", "synthetic", "index"}
    assert batch["image"].meta["medgan"]["condition"]["scalar"] == positions
    assert [b["image"].meta["medgan"]["condition"]["scalar"] for b in decollate_batch(batch)] == positions
    # a pair condition that is not a dict, or conditions that do not match the maps: MedganError, nothing written
    bad_dir = tmp_path / "bad"
    with pytest.raises(MedganError, match="real pair 1: condition must be a dict"):
        SyntheticAugmentedDataset([own[0], {**pairs[1], "condition": 0.5}], **base)
    with pytest.raises(MedganError, match="label map 0: condition must be a dict"):
        write_synthetic_cache(synth, maps[:1], bad_dir, n=1, conditions=[0.5])
    with pytest.raises(MedganError, match="1 conditions for 4 label maps"):
        write_synthetic_cache(synth, maps, bad_dir, n=1, conditions=[{"scalar": 0.5}])
    assert not bad_dir.exists()

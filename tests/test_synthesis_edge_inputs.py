"""Edge inputs of generation, detection and adaptation on the real MNI template, its tissue labels and the shipped
models: a 2-D map's 3x3 affine, a map that declares other label names, an unused ``axis``, a bfloat16 scan for the
detector, non-integer adaptation options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import medgan
from medgan.data.labels import TISSUE_LABELS, tissue_labels
from medgan.errors import MedganError
from medgan.io.scan import affine_4x4

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def t1():
    return medgan.load_scan(MNI / "t1.nii.gz")


@pytest.fixture(scope="module")
def labels(t1):
    return tissue_labels(MNI / "gm.nii.gz", MNI / "wm.nii.gz", t1=t1)


@pytest.fixture(scope="module")
def slice_labels(labels):
    """A 64 x 64 axial slice of the tissue map through the ventricles: all four labels."""
    out = labels[:, 20:84, 30:94, 80]
    assert sorted(torch.unique(out.as_tensor()).tolist()) == [0.0, 1.0, 2.0, 3.0]
    return out


@pytest.fixture(scope="module")
def syn():
    return medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")


def _with(slice_labels, *, affine=None, meta=None) -> MetaTensor:
    return MetaTensor(
        slice_labels.as_tensor().clone(),
        affine=slice_labels.affine if affine is None else affine,
        meta=dict(meta or {}),
    )


# ---------------------------------------------------------------- 2-D map with a 3x3 affine


def test_generate_takes_a_2d_map_with_a_3x3_affine(syn, slice_labels):
    """MONAI's ITK reader gives a 2-D image a 3x3 affine: generate raised make_scan's "affine must be 4x4"."""
    full = np.asarray(slice_labels.affine, dtype=np.float64)
    affine3 = torch.as_tensor(full[np.ix_([0, 1, 3], [0, 1, 3])])  # the slice's in-plane axes and translation
    out = syn.generate(_with(slice_labels, affine=affine3), seed=0, condition={"scalar": 0.5})
    assert out.shape == (1, 64, 64) and out.meta["medgan"]["synthetic"] is True
    np.testing.assert_array_equal(np.asarray(out.affine), affine_4x4(affine3))
    np.testing.assert_allclose(out.meta["spacing"], [1.0, 1.0])
    # the grid's affine does not change the image
    ref = syn.generate(slice_labels, seed=0, condition={"scalar": 0.5})
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor())


# ---------------------------------------------------------------- declared label names


def test_generate_refuses_a_map_whose_declared_labels_contradict_the_model(syn, slice_labels):
    """Same values, another convention (1 = WM, 3 = CSF): the model's WM was rendered as CSF without a word."""
    swapped = {"0": "background", "1": "white_matter", "2": "grey_matter", "3": "csf"}
    with pytest.raises(MedganError, match=r"disagree.*1 is 'white_matter' in the map, 'csf_other'.*3 is 'csf'") as e:
        syn.generate(_with(slice_labels, meta={"labels": swapped}), seed=0, condition={"scalar": 0.5})
    assert "2 is" not in str(e.value)  # grey matter agrees: only the mismatching values are named
    # int keys, float-like keys, other case and spacing of the same names: the model's own labels
    same = {0: "Background", 1.0: "CSF other", "2": "GREY-MATTER", "3.0": "white_matter", 9: "lesion"}
    ref = syn.generate(slice_labels, seed=0, condition={"scalar": 0.5})
    out = syn.generate(_with(slice_labels, meta={"labels": same}), seed=0, condition={"scalar": 0.5})
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor())
    assert "labels" in slice_labels.meta  # tissue_labels declares TISSUE_LABELS, the model's: accepted (ref above)
    assert {int(k): v for k, v in slice_labels.meta["labels"].items()} == TISSUE_LABELS
    with pytest.raises(MedganError, match="integer label values"):
        syn.generate(_with(slice_labels, meta={"labels": {"wm": 3}}), seed=0, condition={"scalar": 0.5})
    with pytest.raises(MedganError, match="must map label values to names"):
        syn.generate(_with(slice_labels, meta={"labels": ["background"]}), seed=0, condition={"scalar": 0.5})


def test_generate_checks_axis_even_where_it_is_unused(syn, slice_labels, labels):
    for bad in (7, -1, True, 1.0, "2"):
        with pytest.raises(MedganError, match="axis"):
            syn.generate(slice_labels, seed=0, condition={"scalar": 0.5}, axis=bad)
    # a NumPy integer is an integer; on a 2-D map it changes nothing
    ref = syn.generate(slice_labels, seed=0, condition={"scalar": 0.5})
    out = syn.generate(slice_labels, seed=0, condition={"scalar": 0.5}, axis=np.int64(1))
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor())
    vol = syn.generate(labels[:, 20:84, 30:94, 79:82], seed=0, axis=np.int64(2))
    assert vol.shape == (1, 64, 64, 3) and vol.meta["medgan"]["slice_axis"] == 2


# ---------------------------------------------------------------- detector dtypes


def test_detect_synthetic_scores_bfloat16_float16_and_integer_scans(t1):
    slab = t1.as_tensor()[:, :, :, 60:100:8]
    for dtype in (torch.bfloat16, torch.float16):
        low = slab.to(dtype)
        score = medgan.detect_synthetic(low)  # bfloat16: TypeError "unsupported ScalarType BFloat16"
        assert score == pytest.approx(medgan.detect_synthetic(low.float()), abs=1e-6)
    as_int = slab.round().to(torch.int16)
    assert medgan.detect_synthetic(as_int) == pytest.approx(medgan.detect_synthetic(as_int.float()), abs=1e-6)
    with pytest.raises(MedganError, match="complex"):
        medgan.detect_synthetic(slab.to(torch.complex64))
    with pytest.raises(MedganError, match="complex"):
        medgan.detect_synthetic(slab.numpy().astype(np.complex64))
    with pytest.raises(MedganError, match="axis"):
        medgan.detect_synthetic(slab, axis=True)


def test_prepare_slices_takes_bfloat16(t1):
    from medgan.infer.detect import prepare_slices

    sl = t1.as_tensor()[0, :, :, 80]
    torch.testing.assert_close(prepare_slices([sl.bfloat16()]), prepare_slices([sl.bfloat16().float()]))


# ---------------------------------------------------------------- adaptation options


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": "x"}, "steps must be an integer"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": True}, "steps must be an integer"),
        ({"lr": "1e-3"}, "lr must be a number"),
        ({"lr": float("nan")}, "lr > 0"),
        ({"patch_size": "x"}, "patch_size must be an integer"),
        ({"patch_size": (32, 32.5)}, "patch_size must be an integer"),
        ({"batch_size": 2.0}, "batch_size must be an integer"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"axes": ("a", "b")}, "axes must be an integer"),
        ({"axes": 1}, "axes must be a sequence of integers"),
        ({"axes": (0, 1.7)}, "axes must be an integer"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_adapt_to_scan_refuses_non_integer_options(t1, kwargs, match):
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    low = medgan.degrade(t1[:, 40:104, 60:124, 78:80], (2, 2, 1))
    with pytest.raises(MedganError, match=match):
        medgan.adapt_to_scan(sr, low, **{"steps": 1, **kwargs})


def test_adapt_to_scan_takes_numpy_integer_options(t1):
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    low = medgan.degrade(t1[:, 40:104, 60:124, 78:80], (2, 2, 1))
    adapted = medgan.adapt_to_scan(
        sr,
        low,
        steps=np.int64(1),
        lr=np.float32(1e-4),
        patch_size=np.array([16, 16]),
        batch_size=np.int32(1),
        axes=[np.int64(0), 1],
        seed=np.int64(3),
    )
    rec = adapted.adaptation
    assert (rec["steps"], rec["batch_size"], rec["seed"]) == (1, 1, 3)
    assert list(rec["patch_size"]) == [16, 16] and rec["lr"] == pytest.approx(1e-4)
    assert adapted.upscale(low).shape == (1, 64, 64, 2)


def test_an_intensity_image_given_as_labels_gets_a_short_message_and_the_scalar_warning_names_the_file(caplog):
    """A T1 given as a label map listed all its 224 unknown values (about 1 kB in one 'line'); the missing-scalar
    error (now a warning: a single slice is generated mid-volume) did not name the map, unlike its neighbours."""
    import logging

    syn = medgan.Synthesizer.from_pretrained("brain-t1-tissue-2d", device="cpu")
    t1 = medgan.load_scan(MNI / "t1.nii.gz")
    with pytest.raises(MedganError) as info:
        syn.generate(t1, seed=0)
    text = str(info.value)
    assert "this looks like an intensity or probability image, not a label map" in text and len(text) < 400
    assert text.startswith(str(MNI / "t1.nii.gz"))
    labels = tissue_labels(medgan.load_scan(MNI / "gm.nii.gz"), medgan.load_scan(MNI / "wm.nii.gz"))
    one = medgan.io.scan.take_slice(labels, 80)
    one.meta["filename_or_obj"] = "slice80.nii.gz"
    with caplog.at_level(logging.WARNING, logger="medgan"):
        syn.generate(one, seed=0)
    assert caplog.records[-1].getMessage().startswith("slice80.nii.gz: a single slice has no relative slice position")

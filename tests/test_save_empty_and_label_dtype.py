"""save_scan refuses an empty scan, and writes a label map of whole numbers in the smallest integer type."""

import nibabel as nib
import numpy as np
import pytest
from conftest import mni_t1_and_tissue_labels

import medgan
from medgan.errors import MedganError
from medgan.io.scan import is_label_map


@pytest.fixture(scope="module")
def pair():
    return mni_t1_and_tissue_labels()


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty_dcm"])
def test_an_empty_scan_is_refused_before_anything_is_written(pair, tmp_path, name):
    t1, _ = pair
    out = tmp_path / name
    with pytest.raises(MedganError, match=r"empty scan of shape \(1, 0, "):
        medgan.save_scan(t1[:, 200:], out)
    assert not out.exists()


def test_a_label_map_is_written_in_the_smallest_integer_type_with_its_values(pair, tmp_path):
    _, labels = pair
    out = medgan.save_scan(labels, tmp_path / "labels.nii.gz")
    assert nib.load(out).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), labels.numpy()[0])
    back = medgan.load_scan(out)
    assert is_label_map(back)
    np.testing.assert_array_equal(back.numpy(), labels.numpy())


def test_an_image_an_explicit_dtype_and_labels_beyond_uint8_keep_what_they_need(pair, tmp_path):
    t1, labels = pair
    assert nib.load(medgan.save_scan(t1, tmp_path / "t1.nii.gz")).get_data_dtype() == np.float32
    out = medgan.save_scan(labels, tmp_path / "labels_f.nii.gz", dtype=np.float32)
    assert nib.load(out).get_data_dtype() == np.float32
    wide = labels.clone()
    wide[wide == 1] = -5  # a negative label: int16
    assert nib.load(medgan.save_scan(wide, tmp_path / "neg.nii.gz")).get_data_dtype() == np.int16
    wide[wide == 2] = 40000  # beyond int16: int32
    out = medgan.save_scan(wide, tmp_path / "big.nii.gz")
    assert nib.load(out).get_data_dtype() == np.int32
    np.testing.assert_array_equal(medgan.load_scan(out).numpy(), wide.numpy())

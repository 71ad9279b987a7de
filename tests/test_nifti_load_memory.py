"""``load_scan`` of a NIfTI file holds one float32 volume, not two to four, and gives the same bits as before.

``read_nifti`` used to read the whole file with nibabel (Fortran-ordered, and for a scaled integer file through two
float64 temporaries) and ``make_scan`` then copied it to C order: a traced peak of 2x the float32 volume for a
float32 file and 4x for an int16 file with ``scl_slope`` / ``scl_inter`` (1.2 GiB for 512 x 512 x 300). The file is
now read a block of planes at a time straight into the C-ordered scan. Real data: the MNI ICBM152 T1 shipped in
sample_data/, tiled to 320 x 320 x 256 (100 MiB as float32) so that the few MiB of a block are small beside it.
"""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.errors import ScanReadError
from medgan.io import nifti as nifti_module

nib = pytest.importorskip("nibabel")

#: the traced peak allowed to a load, in float32 volumes of the scan (the whole-file read took 2.0 for float32 files,
#: 3.0 to 4.0 for scaled int16 ones; the block read takes 1.08 to 1.2 here)
PEAK_VOLUMES = 1.4

#: tiled MNI T1 grid of the memory tests: 26 M voxels, 100 MiB as float32
BIG_SHAPE = (320, 320, 256)


def _t1() -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(mni_t1_path())
    return np.asarray(img.dataobj), img.affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray, *, slope: float | None = None, inter: float = 0.0) -> Path:
    img = nib.Nifti1Image(data, affine, dtype=data.dtype if data.dtype.fields is None else None)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return path


def _big_files(folder: Path) -> dict[str, Path]:
    t1, affine = _t1()
    reps = [-(-n // m) for n, m in zip(BIG_SHAPE, t1.shape, strict=True)]
    vol = np.tile(t1, reps)[tuple(slice(0, n) for n in BIG_SHAPE)]
    f32 = vol.astype(np.float32) * np.float32(1.37) + np.float32(0.25)  # not integers: every bit of float32 counts
    i16 = vol.astype(np.int16) * 10 - 7
    return {
        "float32 .nii": _save(folder / "f32.nii", f32, affine),
        "float32 .nii.gz": _save(folder / "f32.nii.gz", f32, affine),
        "scaled int16 .nii.gz": _save(folder / "i16.nii.gz", i16, affine, slope=0.1, inter=-3.0),
        # 4-D: volumes become channels; 64 planes each, so blocks end at volume boundaries too
        "scaled int16 4-D .nii": _save(
            folder / "i16_4d.nii",
            i16[:, :, :64, None].repeat(4, axis=3) + np.arange(4, dtype=np.int16),
            affine,
            slope=0.5,
        ),
        # 6400 volumes of 16 x 16 x 16 (crops at 100 places of the T1, 64 times): 256 whole volumes a block
        "scaled int16 6400 small volumes .nii": _save(
            folder / "i16_small_volumes.nii",
            np.stack(
                [i16[x : x + 16, y : y + 16, 100:116] for x in range(40, 240, 20) for y in range(60, 260, 20)] * 64, -1
            ),
            affine,
            slope=0.5,
            inter=-1.0,
        ),
        # 2-D: one plane larger than a block is read a block of lines at a time
        "scaled int16 2-D .nii.gz": _save(
            folder / "i16_2d.nii.gz", np.tile(i16[:, :, 128], (13, 20))[:4096, :6144], affine, slope=0.25, inter=1.0
        ),
    }


@pytest.fixture(scope="module")
def big_files(tmp_path_factory) -> dict[str, Path]:
    return _big_files(tmp_path_factory.mktemp("big"))


def _expected(path: Path) -> np.ndarray:
    """The channel-first float32 array ``load_scan`` gave when it read the file whole: nibabel's scaling (float64
    arithmetic for a scaled file, then float32), axes beyond the third flattened in file order into channels, RGB(A)
    components after them."""
    img = nib.load(path)
    stored = img.shape
    if img.get_data_dtype().fields:
        raw = np.asarray(img.dataobj.get_unscaled())
        data = np.stack([raw[name].astype(np.float32) for name in raw.dtype.names], axis=-1)
    else:
        data = np.asarray(img.dataobj, dtype=np.float32)
    if len(stored) == 2:
        return data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
    return np.moveaxis(data.reshape(*data.shape[:3], -1, order="F"), -1, 0)


def _assert_same_bits(scan, path: Path) -> None:
    got = scan.numpy()
    want = _expected(path)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.flags.c_contiguous and scan.is_contiguous()  # the rest of medgan views and writes it as C-ordered
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bits: -0.0 vs 0.0 would count
    np.testing.assert_array_equal(scan.affine.numpy(), nib.load(path).affine)


@pytest.mark.parametrize(
    "name",
    [
        "float32 .nii",
        "float32 .nii.gz",
        "scaled int16 .nii.gz",
        "scaled int16 4-D .nii",
        "scaled int16 6400 small volumes .nii",
        "scaled int16 2-D .nii.gz",
    ],
)
def test_load_peaks_at_about_one_float32_volume(big_files, name):
    path = big_files[name]
    medgan.load_scan(mni_t1_path())  # imports and first-use caches outside the trace
    tracemalloc.start()
    try:
        scan = medgan.load_scan(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    volume = scan.numpy().nbytes
    assert peak < PEAK_VOLUMES * volume, f"{name}: traced peak {peak / volume:.2f}x the float32 volume"
    _assert_same_bits(scan, path)


def _crops(image: np.ndarray, n: int, size: tuple[int, int, int]) -> np.ndarray:
    """``n`` crops of ``size`` from ``image`` at ``n`` different places, stacked on a 4th axis (a file's volumes)."""
    crops = np.stack([image[i % 20 :, i // 20 :][: size[0], : size[1], : size[2]] for i in range(n)], -1)
    assert len({crops[..., i].tobytes() for i in range(n)}) == n  # every volume different: a mix-up would show
    return crops


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """Small real-data files of every layout the block read lays out (crops of the MNI T1)."""
    folder = tmp_path_factory.mktemp("layouts")
    t1, affine = _t1()
    v = t1[:60, :70, :50]
    rgb = np.zeros(v.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = v, v // 2, 255 - v
    brain = t1[70:130, 80:150, 60:110]  # no background: crops of it differ, so a volume laid out wrong shows
    brain_rgb = np.zeros(brain.shape, dtype=rgb.dtype)
    brain_rgb["R"], brain_rgb["G"], brain_rgb["B"] = brain, brain // 2, 255 - brain
    big_endian = nib.Nifti1Image(v.astype(np.float32) * 1.3, affine, dtype=np.float32)
    big_endian = nib.Nifti1Image(big_endian.dataobj, affine, header=big_endian.header.as_byteswapped(">"))
    nib.save(big_endian, str(folder / "f32_big_endian.nii"))
    marked = nib.Nifti1Image(np.stack([v[:, :, 10:11], v[:, :, 20:21]], axis=-1).astype(np.float32), affine)
    marked.header["intent_name"] = nifti_module.NIFTI_2D_INTENT_NAME
    nib.save(marked, str(folder / "marked_2d.nii"))
    return {
        "float32 big-endian": folder / "f32_big_endian.nii",
        "int16 scaled 4-D": _save(
            folder / "i16_4d.nii.gz", np.stack([v, v // 2, v // 3], -1).astype(np.int16), affine, slope=0.37, inter=12.5
        ),
        "float32 5-D": _save(
            folder / "f32_5d.nii",
            (v[:30, :20, :10, None, None] * np.arange(1, 7).reshape(3, 2)).astype(np.float32),
            affine,
        ),
        "float64 2-D": _save(folder / "f64_2d.nii.gz", v[:, :, 25].astype(np.float64) / 7, affine),
        "int32 beyond 2**24": _save(folder / "i32.nii", v.astype(np.int32) * 123457 + 2**24 + 1, affine),
        "RGB 3-D": _save(folder / "rgb.nii.gz", rgb, affine),
        "RGB 2-D": _save(folder / "rgb_2d.nii", rgb[:, :, 10], affine),
        "marked 2-D, 2 channels": folder / "marked_2d.nii",
        # many volumes smaller than a block: several whole volumes a block, the last block holding fewer
        "int16 scaled 250 small volumes": _save(
            folder / "i16_small_volumes.nii.gz",
            _crops(brain, 250, (5, 6, 7)).astype(np.int16) - 40,
            affine,
            slope=-0.37,
            inter=12.5,
        ),
        "float32 5-D 7 x 11 small volumes": _save(
            folder / "f32_5d_small.nii",
            (_crops(brain, 77, (4, 3, 5)) / 3).astype(np.float32).reshape(4, 3, 5, 7, 11, order="F"),
            affine,
        ),
        "RGB 4-D 9 small volumes": _save(folder / "rgb_4d_small.nii", _crops(brain_rgb, 9, (3, 4, 5)), affine),
    }


@pytest.mark.parametrize("block_voxels", [150, 1000, 4000, 1 << 20, 1 << 30])
@pytest.mark.parametrize(
    "name",
    [
        "float32 big-endian",
        "int16 scaled 4-D",
        "float32 5-D",
        "float64 2-D",
        "int32 beyond 2**24",
        "RGB 3-D",
        "RGB 2-D",
        "marked 2-D, 2 channels",
        "int16 scaled 250 small volumes",
        "float32 5-D 7 x 11 small volumes",
        "RGB 4-D 9 small volumes",
    ],
)
def test_block_read_gives_the_whole_file_read_bits(layouts, name, block_voxels, monkeypatch):
    """Two lines of 60 voxels a block (and 5 of the 7 planes of a 5 x 6 x 7 volume), 1000 and 4000 voxels (whole
    volumes a quarter of that: 4 of 60 voxels, 4 of 210 and 16 of 60, so that 9, 250 and 77 volumes end with a
    partial block), the default, and the whole file in one: the same bits, the same channels."""
    monkeypatch.setattr(nifti_module, "_BLOCK_VOXELS", block_voxels)
    path = layouts[name]
    scan = medgan.load_scan(path)
    if name.startswith("marked"):  # X, Y, 1, C -> (C, X, Y)
        assert tuple(scan.shape) == (2, 60, 70)
        want = _expected(path)[..., 0]
        assert np.array_equal(scan.numpy().view(np.uint32), want.view(np.uint32))
        return
    _assert_same_bits(scan, path)


def test_gzip_stream_ending_early_names_the_file_totals(layouts, tmp_path, monkeypatch):
    """A complete gzip stream holding half the voxels: the message counts the file's bytes, not one block's."""
    monkeypatch.setattr(nifti_module, "_BLOCK_VOXELS", 60 * 70)  # one plane a block: the end falls mid-file
    whole = layouts["float32 big-endian"].read_bytes()
    offset = nib.load(layouts["float32 big-endian"]).dataobj.offset
    half = (len(whole) - offset) // 2 + 3  # not at a plane boundary
    path = tmp_path / "half.nii.gz"
    path.write_bytes(gzip.compress(whole[: offset + half]))
    with pytest.raises(ScanReadError) as info:
        medgan.load_scan(path)
    message = str(info.value)
    assert "fewer voxel data than the header declares" in message
    assert f"Expected {60 * 70 * 50 * 4} bytes, got {half} bytes" in message, message

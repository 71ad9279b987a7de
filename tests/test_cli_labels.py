"""``medgan labels --gm GM --wm WM OUT``: the tissue label map of ``medgan.data.labels.tissue_labels`` from the
command line, on crops of the real MNI ICBM152 GM/WM maps shipped in sample_data, accepted by ``synthesize``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE_DATA

from medgan import load_scan
from medgan.data.labels import TISSUE_LABELS, check_declared_labels, tissue_labels
from pipelines import cli

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
#: 64 x 64 x 3 voxels around the ventricles: all four labels occur, and synthesize runs in seconds
BOX = (slice(40, 104), slice(60, 124), slice(78, 81))


@pytest.fixture()
def maps(tmp_path) -> tuple[Path, Path]:
    """The real MNI GM and WM probability maps (uint8, 0..255) cropped to BOX, world geometry kept."""
    out = []
    for tissue in ("gm", "wm"):
        crop = nib.load(MNI / f"{tissue}.nii.gz").slicer[BOX]
        path = tmp_path / f"{tissue}.nii.gz"
        nib.save(crop, path)
        out.append(path)
    return out[0], out[1]


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["labels", *argv])
    return code, capsys.readouterr().err


def test_label_map_is_tissue_labels_output_with_geometry_and_names(tmp_path, maps, capsys):
    gm, wm = maps
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), str(out))
    assert code == 0, err

    expected = tissue_labels(gm, wm)
    img = nib.load(out)
    got = np.asarray(img.dataobj)
    np.testing.assert_array_equal(got, expected.numpy()[0])
    assert set(np.unique(got).tolist()) == {0, 1, 2, 3}  # a real crop, not an all-background map
    # the GM map's grid, unchanged
    assert img.shape == nib.load(gm).shape == (64, 64, 3)
    np.testing.assert_allclose(img.affine, nib.load(gm).affine, atol=1e-5)

    # the sidecar names the labels; read back, they are the names train-cgan and synthesize check against
    sidecar = json.loads(out.with_name("labels.json").read_text())
    assert sidecar["label_names"] == {str(k): v for k, v in TISSUE_LABELS.items()}
    scan = load_scan(out)
    assert {int(k): v for k, v in scan.meta["labels"].items()} == TISSUE_LABELS
    check_declared_labels(scan.meta, TISSUE_LABELS, name=str(out))  # what train-cgan runs on a labels subject


def test_threshold_and_scale_are_passed_to_tissue_labels(tmp_path, maps, capsys):
    gm, wm = maps
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--threshold", "0.6", "--scale", "255", str(out))
    assert code == 0, err
    got = np.asarray(nib.load(out).dataobj)
    np.testing.assert_array_equal(got, tissue_labels(gm, wm, threshold=0.6, scale=255.0).numpy()[0])
    assert not np.array_equal(got, tissue_labels(gm, wm).numpy()[0])  # the option changed the brain mask


def test_t1_mask_is_passed_to_tissue_labels(tmp_path, maps, capsys):
    gm, wm = maps
    t1 = tmp_path / "t1.nii.gz"
    nib.save(nib.load(MNI / "t1.nii.gz").slicer[BOX], t1)  # the shipped T1 on the maps' grid
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--t1", str(t1), str(out))
    assert code == 0, err
    got = np.asarray(nib.load(out).dataobj)
    np.testing.assert_array_equal(got, tissue_labels(gm, wm, t1=t1).numpy()[0])
    assert not np.array_equal(got, tissue_labels(gm, wm).numpy()[0])  # T1 > 0, not p_gm + p_wm, is the mask


def test_synthesize_accepts_the_label_map(tmp_path, maps, capsys):
    gm, wm = maps
    labels = tmp_path / "labels.nii.gz"
    assert _run(capsys, "--gm", str(gm), "--wm", str(wm), str(labels))[0] == 0
    synth = tmp_path / "synth.nii.gz"
    args = ["--model", "brain-t1-tissue-2d", "--labels", str(labels), "--out", str(synth), "--seed", "0"]
    code = cli.main(["synthesize", *args, "--scalar", "0.5"])
    assert code == 0, capsys.readouterr().err
    img, lab = nib.load(synth), nib.load(labels)
    assert img.shape == lab.shape
    np.testing.assert_allclose(img.affine, lab.affine, atol=1e-5)
    data, tissue = img.get_fdata(), np.asarray(lab.dataobj)
    # a T1 rendering of the map: white matter brighter than grey matter, grey brighter than CSF
    assert data[tissue == 3].mean() > data[tissue == 2].mean() > data[tissue == 1].mean()


def test_existing_output_and_input_are_refused(tmp_path, maps, capsys):
    gm, wm = maps
    out = tmp_path / "labels.nii.gz"
    assert _run(capsys, "--gm", str(gm), "--wm", str(wm), str(out))[0] == 0
    before = out.read_bytes()
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--threshold", "0.6", str(out))
    assert code == cli.EXIT_FAILED
    assert err.count("\n") == 1 and "exists" in err and "--overwrite" in err, err
    assert out.read_bytes() == before
    assert _run(capsys, "--gm", str(gm), "--wm", str(wm), "--threshold", "0.6", "--overwrite", str(out))[0] == 0
    assert out.read_bytes() != before
    # never an input map, --overwrite or not
    gm_bytes = gm.read_bytes()
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--overwrite", str(gm))
    assert code == cli.EXIT_FAILED and err.count("\n") == 1 and "input" in err, err
    assert gm.read_bytes() == gm_bytes


def test_shape_mismatch_is_one_line_error(tmp_path, maps, capsys):
    gm, _ = maps
    wm = tmp_path / "wm_other.nii.gz"
    nib.save(nib.load(MNI / "wm.nii.gz").slicer[40:104, 60:120, 78:81], wm)  # 64 x 60 x 3: not GM's grid
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), str(out))
    assert code == cli.EXIT_FAILED
    assert err.startswith("medgan labels: error: ") and err.count("\n") == 1 and "shape" in err, err
    assert not out.exists()


def test_non_nifti_output_and_missing_option_are_refused(tmp_path, maps, capsys):
    gm, wm = maps
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), str(tmp_path / "labels_dicom"))
    assert code == cli.EXIT_FAILED and ".nii" in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exc:
        cli.main(["labels", "--gm", str(gm), str(tmp_path / "labels.nii.gz")])  # no --wm
    assert exc.value.code == cli.EXIT_USAGE
    assert not any(tmp_path.glob("labels*"))


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's ``medgan labels`` example runs as written on the shipped maps, and its ``synthesize`` line is
    a valid command on that output (run above on a crop: the whole head takes about 30 s)."""
    import re
    import shlex

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(mkdir -p out[^\n]*\nmedgan labels .*?)```", text, re.S).group(1)
    mkdir, *lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    assert mkdir == ["mkdir", "-p", "out"]  # the outputs go to the git-ignored out/, not the checkout's root
    assert [words[:2] for words in lines] == [["medgan", "labels"], ["medgan", "synthesize"]]
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    assert cli.main(lines[0][1:]) == 0, capsys.readouterr().err
    out = Path(lines[0][-1])
    gm, wm = (lines[0][lines[0].index(flag) + 1] for flag in ("--gm", "--wm"))
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), tissue_labels(gm, wm).numpy()[0])
    args = cli.build_parser().parse_args(lines[1][1:])
    assert args.func.__module__ == "pipelines.commands.synthesize" and Path(args.labels) == out


@pytest.mark.parametrize("threshold", ["0", "1.5", "-0.2", "nan"])
def test_threshold_outside_zero_one_is_a_usage_error(tmp_path, maps, capsys, threshold):
    # --threshold 1.5 wrote an all-background map (no p_gm + p_wm reaches 1.5) and 0 marked every voxel brain,
    # both with exit 0
    gm, wm = maps
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(SystemExit) as exc:
        cli.main(["labels", "--gm", str(gm), "--wm", str(wm), "--threshold", threshold, str(out)])
    assert exc.value.code == cli.EXIT_USAGE
    assert "(0, 1]" in capsys.readouterr().err
    assert not out.exists()


def test_threshold_that_no_voxel_reaches_is_an_error_not_an_all_background_map(tmp_path, capsys):
    # the top slices of the real maps hold a little grey matter, p_gm + p_wm at most about 0.1 (checked below):
    # threshold 0.5 leaves no brain voxel, and wrote an all-background map with exit 0
    gm, wm = tmp_path / "gm_top.nii.gz", tmp_path / "wm_top.nii.gz"
    for tissue, path in (("gm", gm), ("wm", wm)):
        nib.save(nib.load(MNI / f"{tissue}.nii.gz").slicer[:, :, 155:], path)
    total = (np.asarray(nib.load(gm).dataobj, float) + np.asarray(nib.load(wm).dataobj, float)) / 255
    assert 0.05 < total.max() < 0.5
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--threshold", "0.5", str(out))
    assert code == cli.EXIT_FAILED
    assert "brain mask is empty" in err and "lower the threshold" in err and err.count("\n") == 1, err
    assert not out.exists()
    # the library refuses it too (medgan labels only passes the value on), and the same range
    from medgan.errors import MedganError

    with pytest.raises(MedganError, match="brain mask is empty"):
        tissue_labels(gm, wm, threshold=0.5)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(MedganError, match=r"\(0, 1\]"):
            tissue_labels(gm, wm, threshold=bad)


def test_t1_without_brain_voxels_is_an_error(tmp_path, maps, capsys):
    # a T1 with no voxel above 0 (here the real T1 crop, negated) made every voxel background
    gm, wm = maps
    crop = nib.load(MNI / "t1.nii.gz").slicer[BOX]
    t1 = tmp_path / "t1_negative.nii.gz"
    nib.save(nib.Nifti1Image(-np.asarray(crop.dataobj, np.float32), crop.affine), t1)
    out = tmp_path / "labels.nii.gz"
    code, err = _run(capsys, "--gm", str(gm), "--wm", str(wm), "--t1", str(t1), str(out))
    assert code == cli.EXIT_FAILED
    assert "brain mask is empty" in err and "skull-stripped" in err, err
    assert not out.exists()


def test_all_zero_maps_outside_the_brain_still_give_a_background_map(maps):
    # a crop outside the head: no tissue, so an all-background map is the right answer, not an error
    gm = nib.load(MNI / "gm.nii.gz").slicer[0:8, 0:8, 0:3]
    wm = nib.load(MNI / "wm.nii.gz").slicer[0:8, 0:8, 0:3]
    assert not np.asarray(gm.dataobj).any() and not np.asarray(wm.dataobj).any()
    labels = tissue_labels(np.asarray(gm.dataobj)[None], np.asarray(wm.dataobj)[None])
    assert not labels.numpy().any()

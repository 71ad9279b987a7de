"""Review 30: the remaining places where a patient's identifiers, typed into folder names, reached text for people.

Sites name folders after patients (``Doe^Jane_MRN-4711/Doe_Jane_T1``); medgan promises (docs/BATCH.md *Privacy*,
README, CONTRIBUTING) not to print the identifying values of a DICOM header. Found open after review 29:

* ``train-cgan``'s config errors for a folder of several series and for subjects in different slice planes printed
  the subject folders as named;
* ``train_detector``'s exports recorded the training scans' paths without cutting the identifiers out;
* a batch scan's error that quotes *another* scan's path (``a copy of the series in ...``) was cleaned with the
  failing scan's identifiers only.

The data are real corpus series with identifying values stamped into their headers (as test_batch_privacy_29 does).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import mni_cgan_subject, require_shared

from medgan.errors import ConfigError

PATIENT = "Doe^Jane_MRN-4711"
SERIES = {"dicom2nifti_hitachi_anatomical_001": "Doe_Jane_T1", "dcm_qa_ts_1_explicit_vr_le": "mosaic_Jane"}
#: every spelling of the stamped values that must not reach the text for people (lower case)
TOKENS = ("doe", "jane", "4711", "mrn", "19610203", "acc998877")


def _hits(text: str, *roots: Path) -> list[str]:
    """The stamped values found in ``text`` as words, once the test's own temporary folders (named by pytest) are
    taken out."""
    for root in roots:
        text = text.replace(str(root), "ROOT")
    words = set(re.findall(r"[^\W_]+", text.lower()))
    return [t for t in TOKENS if t in words]


def _stamp(src_folder: Path, dst: Path, *, name: str = "Doe^Jane", pid: str = "MRN-4711") -> Path:
    """Copy a corpus series into ``dst`` with identifying values in its headers and its file names."""
    dst.mkdir(parents=True)
    for i, src in enumerate(sorted(src_folder.iterdir())):
        ds = pydicom.dcmread(src)
        ds.PatientName = name
        ds.PatientID = pid
        ds.PatientBirthDate = "19610203"
        ds.AccessionNumber = "ACC998877"
        ds.save_as(dst / f"Doe_Jane_{i:03d}.dcm")
    return dst


@pytest.fixture(scope="module")
def ident_tree(tmp_path_factory) -> tuple[Path, Path]:
    """(the pytest folder, ``tree/Doe^Jane_MRN-4711``): two real series, identifying headers and folder names."""
    corpus = require_shared()
    base = tmp_path_factory.mktemp("ident")
    patient = base / "tree" / PATIENT
    for case, folder in SERIES.items():
        _stamp(corpus / case / "input", patient / folder)
    return base, patient


def _label_map_of(image_path: Path, dst: Path) -> Path:
    """A real integer label map (0..3, intensity quartiles) on the grid of the scan at ``image_path``."""
    from monai.data import MetaTensor

    from medgan import load_scan, save_scan

    scan = load_scan(image_path)
    arr = scan.as_tensor().numpy()
    labels = np.digitize(arr, np.quantile(arr, [0.25, 0.5, 0.75])).astype(np.float32)
    return Path(save_scan(MetaTensor(labels, affine=scan.affine, meta={}), dst))


# ---------------------------------------------------------------- (a) train-cgan config errors
def test_cgan_folder_of_several_series_error_is_cleaned(ident_tree, tmp_path):
    """A subject ``image:`` that is a folder of two series: the ConfigError names the folder and each series' folder
    (the paths a config can give), and printed them as named (Doe^Jane_MRN-4711/Doe_Jane_T1)."""
    from medgan.data.cgan_data import load_pairs

    base, patient = ident_tree
    with pytest.raises(ConfigError) as err:
        load_pairs([{"image": str(patient), "labels": str(patient)}], {"method": "zscore"})
    text = str(err.value)
    assert "holds 2 series" in text  # the message is the one about several series
    assert "<removed>" in text  # the folders are still named, as folders, with the identifiers cut out
    assert not _hits(text, base), text


def test_cgan_slice_plane_error_is_cleaned(ident_tree, tmp_path):
    """Subjects in different slice planes (a sagittal DICOM series, the axial MNI template): the ConfigError lists
    each subject by its folder or file name, and printed the series' folder (Doe_Jane_T1) as named."""
    from medgan.data.cgan_data import load_pairs, slice_normal

    base, patient = ident_tree
    series = patient / SERIES["dicom2nifti_hitachi_anatomical_001"]
    labels = _label_map_of(series, tmp_path / "labels.nii.gz")
    pairs = load_pairs(
        [{"image": str(series), "labels": str(labels)}, mni_cgan_subject(tmp_path)], {"method": "zscore"}
    )
    with pytest.raises(ConfigError) as err:
        slice_normal(pairs, 2, directed=False)
    text = str(err.value)
    assert "another anatomical plane" in text and "t1.nii.gz" in text  # the NIfTI subject is named as it is
    assert "(T1: PIR" in text  # the series' folder, Doe_Jane_T1, without its patient's name
    assert not _hits(text, base, tmp_path), text


# ---------------------------------------------------------------- (d) train_detector exports
def _detector_slices(series: Path) -> tuple[list, list]:
    """Real slices of a stamped DICOM series (its own MetaTensor slices) and fake ones (the same, smoothed)."""
    from scipy.ndimage import gaussian_filter

    from medgan import load_scan

    scan = load_scan(series)
    real = [scan[0, :, :, k] for k in range(scan.shape[-1])]
    fake = [gaussian_filter(np.asarray(s, dtype=np.float32), 1.5) for s in real]
    return real, fake


def _detector_text(ckpt) -> str:
    import json

    return json.dumps(ckpt.metadata, default=str)


def test_detector_export_cleans_name_and_command_from_slice_headers(ident_tree, tmp_path):
    """Slices of a DICOM series named after its patient: the checkpoint recorded the run's name and command (the
    model card's "Reproduce") with the patient's name and ID, as typed; the header's identifiers now cut them out."""
    from medgan.infer.detect import train_detector

    base, patient = ident_tree
    series = patient / SERIES["dicom2nifti_hitachi_anatomical_001"]
    real, fake = _detector_slices(series)
    command = f"python train_det.py --real {series} --out {tmp_path / 'det.safetensors'}"
    ckpt = train_detector(
        real,
        fake,
        tmp_path / "det.safetensors",
        epochs=1,
        augment=False,
        device="cpu",
        name="detector-Doe_Jane-MRN-4711",
        command=command,
    )
    text = _detector_text(ckpt)
    assert not _hits(text, base, tmp_path), text
    assert ckpt.metadata["name"] == "detector"  # the words that are no identifier stay
    assert "<removed>/T1" in ckpt.metadata["command"]  # the folders stay named as folders


def test_detector_export_cleans_with_sources_for_plain_arrays(ident_tree, tmp_path):
    """Slices given as plain arrays carry no header: ``sources`` names the scans they came from, whose identifiers
    (AccessionNumber too, which the loaded scan's header summary does not hold) are cut out."""
    from medgan.infer.detect import train_detector

    base, patient = ident_tree
    series = patient / SERIES["dicom2nifti_hitachi_anatomical_001"]
    real, fake = _detector_slices(series)
    real = [np.asarray(s) for s in real]
    ckpt = train_detector(
        real,
        fake,
        tmp_path / "det.safetensors",
        epochs=1,
        augment=False,
        device="cpu",
        name="det_ACC998877",
        command=f"train {series}",
        sources=[str(series)],
    )
    assert not _hits(_detector_text(ckpt), base, tmp_path), _detector_text(ckpt)
    # no source, no header: nothing is known to cut, and nothing else is changed
    plain = train_detector(
        real,
        fake,
        tmp_path / "plain.safetensors",
        epochs=1,
        augment=False,
        device="cpu",
        name="det_ACC998877",
        command="train x",
    )
    assert plain.metadata["name"] == "det_ACC998877" and plain.metadata["command"] == "train x"


# ---------------------------------------------------------------- (c) another scan's path in a scan's error
def test_batch_copy_of_a_series_error_cleans_the_other_scans_path(tmp_path, ident_tree):
    """A copy of a series in another folder is unusable, its error naming the series it copies by that series'
    path and id (``a copy of the series in Doe^Jane_MRN-4711/Doe_Jane_T1 (scan T1-...)``). The error was cleaned
    of the copy's own path only, so the other folder's names stayed; they are cleaned with that scan's identifiers.
    """
    from conftest import save_tiny_sr

    from pipelines.batch.manifest import read_rows
    from pipelines.cli import main

    base, patient = ident_tree
    tree = tmp_path / "tree"
    shutil.copytree(patient / SERIES["dicom2nifti_hitachi_anatomical_001"], tree / PATIENT / "Doe_Jane_T1")
    copy = tree / "zz_backup" / "copy1"
    copy.mkdir(parents=True)
    for i, f in enumerate(sorted((tree / PATIENT / "Doe_Jane_T1").iterdir())):
        shutil.copyfile(f, copy / f"IM{i:04d}.dcm")  # the same SOPInstanceUIDs, under names that identify no one
    out = tmp_path / "out"
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    # exit 3: a scan was unusable
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(model), "--quiet"]) == 3
    rows = {r["status"]: r for r in read_rows(out / "manifest.jsonl")}
    assert set(rows) == {"done", "unusable"}, rows
    error = rows["unusable"]["error"]
    assert "a copy of the series in" in error and rows["done"]["scan_id"] in error
    assert "<removed>/T1" in error, error  # the folder is still named as a folder
    assert not _hits(error, tmp_path), error
    log_lines = [line for line in (out / "medgan.log").read_text(encoding="utf-8").splitlines() if "unusable" in line]
    assert log_lines and not any(_hits(line, tmp_path) for line in log_lines), log_lines
    # the copy's own path, which holds no identifier, is as it is
    assert rows["unusable"]["input"] == "zz_backup/copy1"


# ---------------------------------------------------------------- (b) a scan whose header cannot be read
def test_batch_unreadable_dicom_path_cleaned_with_its_folder_neighbours_identifiers(tmp_path, ident_tree):
    """A damaged ``.dcm`` file in the patient's folder has no identifiers of its own: its ``input`` and ``unusable``
    line spelled ``Doe^Jane_MRN-4711`` while the readable series beside it read ``<removed>``. It is cleaned with
    the identifiers of the scans in the nearest folder it shares; a damaged file in a folder shared with no scan
    whose header is known is as it was; other rows, the ids and the counts are unchanged."""
    from conftest import save_tiny_sr

    from pipelines.batch.manifest import read_rows
    from pipelines.cli import main

    base, patient = ident_tree
    tree = tmp_path / "tree"
    shutil.copytree(patient / SERIES["dicom2nifti_hitachi_anatomical_001"], tree / PATIENT / "Doe_Jane_T1")
    (tree / PATIENT / "broken").mkdir()
    # real bytes, but no DICOM header: the start of a real file's pixel data, named .dcm
    data = (tree / PATIENT / "Doe_Jane_T1" / "Doe_Jane_000.dcm").read_bytes()
    (tree / PATIENT / "broken" / "IM0009.dcm").write_bytes(data[-4096:])
    (tree / "other" / "Smith_0001").mkdir(parents=True)
    (tree / "other" / "Smith_0001" / "IM0001.dcm").write_bytes(data[-4096:])
    out = tmp_path / "out"
    model = save_tiny_sr(tmp_path / "tiny.safetensors")
    assert main(["batch", "upscale", str(tree), str(out), "--model", str(model), "--quiet"]) == 3
    rows = {r["input"]: r for r in read_rows(out / "manifest.jsonl")}
    assert set(rows) == {"<removed>/T1", "<removed>/broken/IM0009.dcm", "other/Smith_0001/IM0001.dcm"}, rows
    assert rows["<removed>/broken/IM0009.dcm"]["status"] == "unusable"
    log_text = (out / "medgan.log").read_text(encoding="utf-8")
    unusable = [line for line in log_text.splitlines() if "): unusable:" in line]
    assert len(unusable) == 2 and not any(_hits(line, tmp_path) for line in unusable), unusable
    assert "other/Smith_0001/IM0001.dcm" in log_text  # no neighbour with a known header: nothing is cut
    # the warning about output paths counts the readable series only (the damaged files have no output)
    assert "the input paths of 1 scan(s)" in log_text

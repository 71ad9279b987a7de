"""Review 30, second part: the other places where a patient-named folder reached text for people.

Sites name folders after patients (``Doe^Jane_MRN-4711/Doe_Jane_T1``); medgan promises (docs/BATCH.md *Privacy*)
not to print the identifying values of a DICOM header. After ea351dd these still printed a subject's path as named:

* ``train-cgan``'s ``load_pairs`` errors (a subject listed twice, a label map on another grid, another modality),
  the sampler's errors, the validation items' names (the ``scan`` of ``metrics.jsonl`` rows) and the subject
  warnings of :class:`medgan.train.cgan.CGANTrainer`;
* ``train-sr``'s config error for a validation scan inside a training folder;
* discovery's reason for a copy of a series (``a copy of the series in ...``), which ``medgan info`` prints;
* ``benchmarks/synthetic_quality.py`` trained its detector without ``sources=``, so nothing was known to cut.

The data are a real corpus series with identifying values stamped into its headers (as test_privacy_30 does).
"""

from __future__ import annotations

import ast
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, mni_cgan_subject, require_shared
from test_privacy_30 import PATIENT, SERIES, _hits, _label_map_of, _stamp

from medgan.errors import ConfigError, MedganError

HITACHI = "dicom2nifti_hitachi_anatomical_001"


@pytest.fixture(scope="module")
def series_tree(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the pytest folder, ``Doe^Jane_MRN-4711/Doe_Jane_T1``: a real series with an identifying header, an integer
    label map on its grid, in a folder that holds no identifier)."""
    corpus = require_shared()
    base = tmp_path_factory.mktemp("ident2")
    series = _stamp(corpus / HITACHI / "input", base / "tree" / PATIENT / SERIES[HITACHI])
    (base / "maps").mkdir()
    labels = _label_map_of(series, base / "maps" / "labels.nii.gz")
    return base, series, labels


def _subject(series: Path, labels: Path) -> dict[str, str]:
    return {"image": str(series), "labels": str(labels)}


# ---------------------------------------------------------------- train-cgan: load_pairs' errors
def test_cgan_duplicate_subject_error_is_cleaned(series_tree):
    """One series listed twice: the error names both subjects, and printed the patient's folder twice."""
    from medgan.data.cgan_data import load_pairs

    base, series, labels = series_tree
    with pytest.raises(MedganError) as err:
        load_pairs([_subject(series, labels)] * 2, {"method": "zscore"})
    text = str(err.value)
    assert "the training subject" in text and text.count("<removed>/T1") == 2, text
    assert not _hits(text, base), text


def test_cgan_grid_and_modality_errors_are_cleaned(series_tree, tmp_path):
    """A label map on another grid (the MNI crop's), and a CT data.modality for the MR series: both errors name the
    subject, cleaned of its own identifiers; the label map's path, which holds none, is as it is."""
    from medgan.data.cgan_data import load_pairs

    base, series, labels = series_tree
    other = mni_cgan_subject(tmp_path)
    with pytest.raises(MedganError, match="differs from the image's") as err:
        load_pairs([{"image": str(series), "gm": other["gm"], "wm": other["wm"]}], {"method": "zscore"})
    text = str(err.value)
    assert "<removed>/T1" in text and other["gm"] in text, text
    assert not _hits(text, base, tmp_path), text
    with pytest.raises(MedganError, match="data.modality") as err:
        load_pairs([_subject(series, labels)], {"method": "zscore"}, modality="CT")
    assert "<removed>/T1" in str(err.value) and not _hits(str(err.value), base), str(err.value)


# ---------------------------------------------------------------- train-cgan: sampler, validation rows, warnings
def test_cgan_sampler_error_and_validation_names_are_cleaned(series_tree):
    """The validation items' names are the ``scan`` of each metrics.jsonl row (``Doe_Jane_T1#slice12``); the
    sampler's error for slices smaller than the patch named the whole path."""
    from medgan.data.cgan_data import PairSampler, load_pairs, split_slices, validation_items

    base, series, labels = series_tree
    pairs = load_pairs([_subject(series, labels)], {"method": "zscore"})
    splits = [split_slices(p["labels"], axis=2, min_foreground=0.0, val_fraction=0.2, val_gap=0) for p in pairs]
    items = validation_items(pairs, [s[1] for s in splits], spatial_dims=2, slice_axis=2, max_slices=2)
    assert items and all(item["name"].startswith("T1#slice") for item in items), [i["name"] for i in items]
    with pytest.raises(MedganError, match="smaller than train.patch_size") as err:
        PairSampler(pairs, [s[0] for s in splits], patch_size=[4096, 4096], batch_size=1, slice_axis=2)
    assert "<removed>/T1" in str(err.value) and not _hits(str(err.value), base), str(err.value)


def test_cgan_subject_warnings_are_cleaned(series_tree, caplog):
    """The subject warnings (orientation unknown, synthetic, made by medgan, a tissue map) named the subject's path
    as named. The pair is load_pairs' own; its marks are set so that every warning is given."""
    from medgan.data.cgan_data import load_pairs
    from medgan.train.cgan import CGANTrainer

    base, series, labels = series_tree
    (pair,) = load_pairs([_subject(series, labels)], {"method": "zscore"})
    marked = {
        **pair,
        "orientation": None,
        "synthetic": "medgan synthesis output",
        "derived": "medgan upscale output",
        "tissue_map_hint": "gm in its name",
    }
    trainer = SimpleNamespace(pairs=[marked], cfg={"data": {"slice_axis": 2}})
    with caplog.at_level(logging.WARNING, logger="medgan.train.cgan"):
        CGANTrainer._warn_subjects(trainer)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("<removed>/T1" in line for line in lines), lines
    assert not any(_hits(line, base) for line in lines), lines


# ---------------------------------------------------------------- train-sr: a validation scan inside data.train
def test_sr_val_in_train_error_is_cleaned(series_tree):
    from medgan.train.config import _check_paths

    base, series, _ = series_tree
    cfg = {"data": {"train": [str(series.parent)], "val": [str(series)]}}
    with pytest.raises(ConfigError, match="is also in data.train") as err:
        _check_paths(cfg, "sr.yaml")
    text = str(err.value)
    assert "<removed>/T1" in text and not _hits(text, base), text


# ---------------------------------------------------------------- discovery: a copy of a series
def test_discovery_copy_reason_is_cleaned(series_tree, tmp_path):
    """A copy of a series elsewhere is unusable, its reason naming the original's folder: cleaned where discovery
    makes it (``medgan info`` and every caller print it), with the original series' own identifiers."""
    from medgan.io.discover import discover_scans

    _, series, _ = series_tree
    tree = tmp_path / "tree"
    shutil.copytree(series, tree / PATIENT / "Doe_Jane_T1")
    copy = tree / "zz_backup" / "copy1"
    copy.mkdir(parents=True)
    for i, f in enumerate(sorted((tree / PATIENT / "Doe_Jane_T1").iterdir())):
        shutil.copyfile(f, copy / f"IM{i:04d}.dcm")  # the same SOPInstanceUIDs, under names that identify no one
    refs = discover_scans(tree)
    (unusable,) = [r for r in refs if not r.usable]
    assert "a copy of the series in <removed>/T1 (scan" in unusable.reason, unusable.reason
    assert not _hits(unusable.reason, tmp_path), unusable.reason


# ---------------------------------------------------------------- the benchmark's detector
def test_benchmark_trains_its_detector_with_sources():
    """train_detector is given the scans its plain-array slices came from (``sources=``), as the only way it can
    know their patients' identifiers; the benchmark's call passed none."""
    tree = ast.parse((REPO / "benchmarks" / "synthetic_quality.py").read_text(encoding="utf-8"))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "train_detector"
    ]
    assert calls and all(any(k.arg == "sources" for k in c.keywords) for c in calls)

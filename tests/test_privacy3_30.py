"""Review 30, third part: train-sr's logs and errors named its training and validation scans by their paths as named.

Sites name folders after patients (``Doe^Jane_MRN-4711/Doe_Jane_T1``); medgan promises (docs/BATCH.md *Privacy*)
not to print the identifying values of a DICOM header. After 2f1334a, :mod:`medgan.train.trainer` still printed them:
the start-up line of each data entry, the tissue-map / synthetic / made-by-medgan warnings, the data.modality error,
the held-out errors (a copy of a validation series, or its voxels, in data.train), every data.val error and warning,
and the ``scan`` of each ``metrics.jsonl`` row. Each scan is now named cleaned of its own header's identifiers, the
header read once per scan.

The data are a real corpus series with identifying values stamped into its headers (as test_privacy_30 does).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import require_shared, tiny_sr_config
from test_privacy_30 import PATIENT, SERIES, _hits, _stamp

from medgan.errors import ConfigError

HITACHI = "dicom2nifti_hitachi_anatomical_001"


@pytest.fixture(scope="module")
def series_tree(tmp_path_factory) -> tuple[Path, Path]:
    """(the pytest folder, ``tree/Doe^Jane_MRN-4711/Doe_Jane_T1``: a real 64 x 64 x 4 MR series with an identifying
    header, in a folder named after the patient)."""
    corpus = require_shared()
    base = tmp_path_factory.mktemp("ident3")
    return base, _stamp(corpus / HITACHI / "input", base / "tree" / PATIENT / SERIES[HITACHI])


def _config(folder: Path, **sections) -> Path:
    """:func:`tiny_sr_config` with whole sections replaced or added (``data`` merged into its data section)."""
    path = tiny_sr_config(folder)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_sr_run_logs_and_metrics_rows_name_the_validation_series_cleaned(series_tree, tmp_path, caplog, monkeypatch):
    """A run validating on the series: the data.val start-up line (the entry, a patient-named folder, and its scan)
    and the ``scan`` of every metrics.jsonl row printed the patient's folder. Each scan's header is read once, however
    many validations the run makes."""
    import medgan.data.patches as patches
    from medgan.train.trainer import train_sr

    base, series = series_tree
    reads: list[str] = []
    real = patches.source_identifiers

    def counted(source):  # a spy: the real reading, counted by scan
        reads.append(patches.source_name(source))
        return real(source)

    monkeypatch.setattr(patches, "source_identifiers", counted)
    path = _config(
        tmp_path,
        device="cpu",
        data={"val": [str(series.parent)]},
        phase1={"steps": 3},
        train={"batch_size": 1, "patch_size": 16, "val_every": 1},
    )
    with caplog.at_level(logging.INFO, logger="medgan.train"):
        train_sr(path, progress=False)
    lines = [r.getMessage() for r in caplog.records]
    (start,) = [line for line in lines if line.startswith("data.val: ")]
    assert "<removed>" in start and "1 scan(s)" in start, start
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scans = [r["scan"] for row in rows for r in row["scans"]]
    assert len(rows) >= 3 and all("<removed>" in s for s in scans), scans
    text = "\n".join([*lines, *(json.dumps(r) for r in rows)])
    assert not _hits(text, base, tmp_path), [line for line in lines if _hits(line, base, tmp_path)]
    assert reads and len(reads) == len(set(reads)), reads  # one header read per scan, not per validation


def test_sr_modality_error_names_the_training_series_cleaned(series_tree, tmp_path):
    from medgan.train.trainer import train_sr

    base, series = series_tree
    path = _config(tmp_path, device="cpu", data={"train": [str(series)], "modality": "CT"})
    with pytest.raises(ConfigError, match="but data.modality is 'CT'") as err:
        train_sr(path, progress=False)
    text = str(err.value)
    assert "<removed>/T1#" in text and not _hits(text, base, tmp_path), text


def test_sr_held_out_errors_name_both_scans_cleaned(series_tree, tmp_path):
    """A copy of the validation series in data.train (its UIDs), and a NIfTI file of the training series' voxels as
    data.val (no key in common: same_voxels): both errors named the series by its patient-named folder."""
    from medgan import load_scan, save_scan
    from medgan.train.trainer import train_sr

    base, series = series_tree
    copy = tmp_path / "tree2" / PATIENT / "Doe_Jane_T1_copy"
    shutil.copytree(series, copy)
    path = _config(tmp_path / "a", device="cpu", data={"train": [str(copy)], "val": [str(series)]})
    with pytest.raises(ConfigError, match="validation scans must be held out") as err:
        train_sr(path, progress=False)
    text = str(err.value)
    assert text.count("<removed>/T1") == 2 and not _hits(text, base, tmp_path), text

    from monai.data import MetaTensor

    scan = load_scan(series)
    # the voxels alone (no medgan provenance): only the voxel comparison can tell it is the training series
    (tmp_path / "maps").mkdir()
    nifti = save_scan(MetaTensor(scan.as_tensor(), affine=scan.affine, meta={}), tmp_path / "maps" / "val.nii.gz")
    path = _config(tmp_path / "b", device="cpu", data={"train": [str(series)], "val": [str(nifti)]})
    with pytest.raises(ConfigError, match="has the same voxels as the data.train scan") as err:
        train_sr(path, progress=False)
    text = str(err.value)
    assert "<removed>/T1#" in text and not _hits(text, base, tmp_path), text


def _trainer(folder: Path, series: Path, **sections):
    """An SRTrainer (not built) of a tiny config whose data.val is the series, its sources walked."""
    from medgan.train.config import load_config
    from medgan.train.trainer import SRTrainer

    data = {"val": [str(series)], **sections.pop("data", {})}
    trainer = SRTrainer(load_config(_config(folder, device="cpu", data=data, **sections)))
    trainer.val_sources = trainer._expand("data.val", [str(series)], [])
    trainer.val_scans = []  # what build() sets before _load_val
    return trainer


def test_sr_validation_errors_and_warnings_name_the_series_cleaned(series_tree, tmp_path, caplog):
    """data.val's own checks: non-square validation slices (a 2-D model across the series' 4 mm axis), and the
    warning for non-finite voxels filled before degrading (a NaN set in the series' loaded voxels)."""
    from medgan import load_scan

    base, series = series_tree
    model = {"arch": "srresnet", "spatial_dims": 2, "channels": 8, "n_blocks": 2}
    flat = _trainer(tmp_path / "2d", series, model=model, data={"slice_axes": [0]})
    flat._val_loaded = {}
    with pytest.raises(ConfigError, match="not square") as err:
        flat._load_val()
    assert "<removed>/T1#" in str(err.value) and not _hits(str(err.value), base, tmp_path), str(err.value)

    trainer = _trainer(tmp_path / "3d", series)
    scan = load_scan(series)
    scan[0, 10, 10, 1] = float("nan")
    trainer._val_loaded = {0: scan}
    with caplog.at_level(logging.WARNING, logger="medgan.train"):
        trainer._load_val()
    (line,) = [r.getMessage() for r in caplog.records if "non-finite voxel" in r.getMessage()]
    assert "<removed>/T1#" in line and not _hits(line, base, tmp_path), line
    ((name, _, _),) = trainer.val_scans
    assert "<removed>/T1#" in name and not _hits(name, base, tmp_path), name


def test_sr_scan_warnings_name_each_scan_cleaned(series_tree, caplog):
    """The tissue-map, synthetic and made-by-medgan warnings list the scans flagged (their marks set here, as
    test_privacy2_30 does for train-cgan), each by its folder cleaned of its own identifiers."""
    from medgan.data.patches import expand_sources
    from medgan.train import trainer as T

    base, series = series_tree
    (ref,) = expand_sources([str(series)])
    names = T._ShownNames()
    with caplog.at_level(logging.WARNING, logger="medgan.train"):
        for key in ("data.train", "data.val"):
            T._warn_tissue_maps(key, [(ref, "gm in its name")], names)
            T._warn_synthetic(key, [(ref, "medgan synthesis output")], names)
            T._warn_derived(key, [(ref, "medgan degrade output")], names)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and all("<removed>/T1#" in line for line in lines), lines
    assert not any(_hits(line, base) for line in lines), lines

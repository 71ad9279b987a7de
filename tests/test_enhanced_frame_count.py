"""An enhanced multi-frame file whose Per-Frame Functional Groups do not describe NumberOfFrames frames is refused by
name: its frames cannot be matched to their positions and rescales."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.sequence import Sequence

import medgan
from medgan.errors import ScanReadError

ENHANCED = "dicom2nifti_philips_enhanced_anatomical_001"


@pytest.mark.parametrize("groups", [7, 9])
def test_per_frame_group_count_must_match_the_frames(corpus_dir: Path, tmp_path: Path, groups: int) -> None:
    src = next((corpus_dir / ENHANCED / "input").iterdir())
    ds = pydicom.dcmread(src)
    assert int(ds.NumberOfFrames) == 8
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = Sequence((items + items[-1:])[:groups])
    ds.save_as(tmp_path / "enhanced.dcm")

    with pytest.raises(
        ScanReadError, match=f"NumberOfFrames is 8 but the per-frame functional groups describe {groups}"
    ):
        medgan.load_scan(tmp_path / "enhanced.dcm")
    (ref,) = medgan.discover_scans(tmp_path)
    assert not ref.usable
    assert f"describe {groups}" in ref.reason

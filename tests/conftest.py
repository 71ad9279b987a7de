"""Shared test helpers: where the real data live, and skips that CI turns into failures.

CI sets ``MEDGAN_REQUIRE_SHARED=1`` and ``MEDGAN_REQUIRE_TOOLS=1`` so a missing corpus or
tool fails loudly there; in a user's clone without ``../shared`` or the Debian tools the
tests that need them are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpora" / "dicom"


def require_shared() -> Path:
    """Return the DICOM corpus folder, or skip (fail in CI) when ``../shared`` is absent."""
    if not (CORPUS / "manifest.json").is_file():
        msg = f"conformance corpus not found at {CORPUS} (../shared is absent in this clone)"
        if os.environ.get("MEDGAN_REQUIRE_SHARED"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CORPUS


def require_tool(name: str) -> str:
    """Return the path of an external program, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install the Debian package; .ci/run does)"
        if os.environ.get("MEDGAN_REQUIRE_TOOLS"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return require_shared()


#: The MNI ICBM152 2009a T1 shipped in the repo: nilearn's template cropped to 155x192x161 (uint8), starting at
#: voxel (21, 22, 0) of nilearn's 197x233x189 grid, world geometry kept (see sample_data/README.md).
MNI_T1 = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
#: Where the sample_data crop starts on nilearn's original grid: original index = sample index + this.
MNI_CROP_OFFSET = (21, 22, 0)


def mni_t1_path() -> Path:
    """The real MNI T1 template shipped in ``sample_data/`` (no nilearn needed); fails if it is missing."""
    if not MNI_T1.is_file():
        pytest.fail(f"{MNI_T1} is missing: sample_data/ ships with the repository (rebuild: sample_data/README.md)")
    return MNI_T1


@pytest.fixture(scope="session")
def mni_t1() -> Path:
    """Path of the real MNI T1 template in ``sample_data/`` (see :func:`mni_t1_path`)."""
    return mni_t1_path()

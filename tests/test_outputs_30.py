"""Review 30: what medgan's outputs say about their origin.

- Model cards named no licence for their training data (the shipped ones trained on the MNI template, BSD/MIT
  corpus series and nibabel/pydicom scans; a user's export said nothing at all).
- A NIfTI output's ``descrip`` was empty without provenance and the source's was silently dropped: it is now
  medgan's own line, never the source's free text (which may spell a patient's name).
- Every DICOM series derived from one source got SeriesNumber source + 1000, so two upscales of one series with
  different models showed one number.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
import torch

import medgan
from medgan._version import __version__
from medgan.infer import pretrained
from medgan.infer.checkpoint import save_checkpoint
from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card
from medgan.models.registry import build_generator
from tests.conftest import CORPUS, SAMPLE_DATA, require_shared

SHIPPED = sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))
#: identifying-looking text a site might type into a NIfTI header
SECRET_DESCRIP = b"DOE^JOHN MRN 12345678 T1 sag"

# ---------------------------------------------------------------- (1) training-data licence on model cards


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_states_training_data_licence(name):
    card = (PRETRAINED_DIR / f"{name}.md").read_text(encoding="utf-8")
    head = card.split("<!-- notes -->", 1)[0]
    (line,) = [x for x in head.splitlines() if x.startswith("- training data licence: ")]
    assert "`MNI-ICBM152`" in line and "Louis Collins" in line  # every shipped model learned from the template
    assert "not recorded" not in line
    assert "`sample_data/LICENSES/`" in head
    if name.startswith("brain-mr-"):  # trained on the XA30 volunteer too, validated on nibabel's T1w
        assert "dcm_qa_xa30_t1w_tfl3d/): `BSD-2-Clause`" in line
        assert "- validation data licence: nibabel's T1w (sample_data/nifti/nibabel/anatomical.nii): `MIT`" in head
    # the card on disk is the rendered one (kept in step by python -m medgan.infer.pretrained)
    assert head == render_model_card(PRETRAINED_DIR / f"{name}.safetensors")


def test_card_licences_match_the_sample_data_manifest():
    """Each source's licence on the cards is the one sample_data/MANIFEST.json records for its files."""
    manifest = json.loads((SAMPLE_DATA / "MANIFEST.json").read_text(encoding="utf-8"))
    licence_of = {row["path"]: row["license"] for row in manifest["files"]}
    for key, text in pretrained._SAMPLE_DATA_LICENCES.items():
        stated = re.search(r"`([^`]+)`", text).group(1)
        folders = re.findall(r"sample_data/([^\s,;)]+)", text)
        assert folders, key
        for folder in folders:
            rows = [lic for path, lic in licence_of.items() if path == folder or path.startswith(folder)]
            assert rows and set(rows) == {stated}, (key, folder, rows)
        assert (SAMPLE_DATA / "README.md").read_text(encoding="utf-8").count(stated), key


def _tiny(path: Path, **kwargs) -> Path:
    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]}
    return save_checkpoint(path, build_generator(cfg), roi_size=16, **kwargs)


def test_user_export_card_records_licence_or_says_not_recorded(tmp_path):
    plain = render_model_card(_tiny(tmp_path / "plain.safetensors"))
    assert "- training data licence: not recorded" in plain
    recorded = _tiny(
        tmp_path / "mine.safetensors",
        training_data={"train": ["sub-01.nii.gz"], "licence": "CC-BY-4.0\n(OpenNeuro ds000001)"},
    )
    card = render_model_card(recorded)
    assert "- training data licence (as recorded at export): CC-BY-4.0 (OpenNeuro ds000001)" in card
    # a copy of a shipped model outside the shipped folder is a user's file: its licence is not claimed for it
    copy = tmp_path / "brain-mr-x2-2d.safetensors"
    shutil.copy(PRETRAINED_DIR / "brain-mr-x2-2d.safetensors", copy)
    assert "- training data licence: not recorded" in render_model_card(copy)


# ---------------------------------------------------------------- (2) NIfTI descrip


def _nifti_with_descrip(dst: Path) -> Path:
    """nibabel's real T1w (sample_data) with an identifying-looking ``descrip``."""
    img = nib.load(SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii")
    img.header["descrip"] = SECRET_DESCRIP
    nib.save(img, dst)
    return dst


def _descrip(path: Path) -> bytes:
    return nib.load(path).header["descrip"].tobytes().rstrip(b"\0")


def test_source_descrip_is_not_carried_and_outputs_get_medgan_descrip(tmp_path):
    src = _nifti_with_descrip(tmp_path / "src.nii")
    scan = medgan.load_scan(src)
    assert scan.meta["nifti"]["descrip"] == SECRET_DESCRIP.decode()  # read, kept in memory only

    plain = medgan.save_scan(scan, tmp_path / "plain.nii.gz")
    assert _descrip(plain) == f"converted by medgan {__version__}".encode()
    low = medgan.save_scan(medgan.degrade(scan, (2, 2, 1)), tmp_path / "low.nii.gz")
    assert _descrip(low).startswith(b"medgan ") and b"degradation" in _descrip(low)
    dicom = medgan.save_scan(scan, tmp_path / "dcm", format="dicom")
    for out in (plain, low, *sorted(dicom.glob("*"))):
        assert b"DOE" not in out.read_bytes() and b"12345678" not in out.read_bytes(), out.name
    for side in tmp_path.glob("*.json"):
        assert "DOE" not in side.read_text(encoding="utf-8")


def test_stale_sidecar_beside_a_plain_output_stays_ignored(tmp_path):
    """The plain descrip does not start with "medgan": a sidecar left by an earlier write is not read back."""
    scan = medgan.load_scan(_nifti_with_descrip(tmp_path / "src.nii"))
    out = tmp_path / "x.nii.gz"
    medgan.save_scan(medgan.degrade(scan, (2, 2, 1)), out)
    assert (tmp_path / "x.json").is_file()
    medgan.save_scan(scan, out)  # rewritten without provenance: x.json stays, stale
    again = medgan.load_scan(out)
    assert "degradation" not in again.meta and _descrip(out).startswith(b"converted by medgan")


# ---------------------------------------------------------------- (3) SeriesNumber of derived series


def _series_number(folder: Path) -> int:
    numbers = {int(pydicom.dcmread(f, stop_before_pixels=True).SeriesNumber) for f in folder.glob("*.dcm")}
    assert len(numbers) == 1
    return numbers.pop()


@pytest.fixture(scope="module")
def hitachi():
    """The real Hitachi series of the shared corpus (SeriesNumber 10, 4 slices of 64 x 64)."""
    require_shared()
    return medgan.load_scan(CORPUS / "dicom2nifti_hitachi_anatomical_001" / "input")


def test_derived_series_numbers_differ_by_operation_and_stay_on_rerun(hitachi, tmp_path):
    source = int(hitachi.meta["dicom"]["SeriesNumber"])
    assert source == 10

    def number(scan, name: str) -> int:
        return _series_number(medgan.save_scan(scan, tmp_path / name, format="dicom", reference=hitachi))

    conversion = number(hitachi, "conv")
    assert conversion == source + 1000  # unchanged for a plain conversion
    sr_2d = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    sr_3d = medgan.SuperResolver.from_pretrained("brain-mr-x2-3d", device="cpu")
    up_2d, up_2d_again = number(sr_2d.upscale(hitachi), "a"), number(sr_2d.upscale(hitachi), "b")
    up_3d = number(sr_3d.upscale(hitachi), "c")
    low_2 = number(medgan.degrade(hitachi, (2, 2, 1)), "d")
    low_4 = number(medgan.degrade(hitachi, (4, 4, 1)), "e")
    assert up_2d == up_2d_again  # a rerun keeps its number (the old code gave these ...)
    numbers = [conversion, up_2d, up_3d, low_2, low_4]
    assert len(set(numbers)) == len(numbers), numbers  # (... and all of these: 1010)
    for n in numbers:  # each a multiple of 1000 above the source, within IS
        assert (n - source) % 1000 == 0 and 1000 <= n - source < 10**8 and abs(n) < 2**31


def test_derived_series_number_of_a_source_at_the_top_of_is(hitachi, tmp_path):
    from medgan.io.dicom_write import derived_series_number

    low = medgan.degrade(hitachi, (2, 2, 1))
    top = derived_series_number(2**31 - 1, dict(low.meta))
    assert 2000 <= top < 10**8 and top % 1000 == 0  # the offset alone: the sum would leave IS's range
    assert derived_series_number(None, {}) == 1000
    assert derived_series_number(7, dict(low.meta)) == top + 7
    # what says only how it ran (noise seed, medgan version) does not change the number
    meta = dict(low.meta)
    meta["degradation"] = {**meta["degradation"], "seed": 12345}
    assert derived_series_number(7, meta) == top + 7


def test_series_number_of_a_converted_medgan_series_adds_only_the_conversion(hitachi, tmp_path):
    """``medgan convert`` of a medgan DICOM output added the operation's offset a second time (10 + 2 x offset);
    a conversion of it is source + 1000, as documented."""
    sr = medgan.SuperResolver.from_pretrained("brain-mr-x2-2d", device="cpu")
    up = medgan.save_scan(sr.upscale(hitachi), tmp_path / "up", format="dicom", reference=hitachi)
    first = _series_number(up)
    assert first % 1000 == 10 and first > 1010
    again = medgan.load_scan(up)
    assert isinstance(again.meta.get("medgan"), dict)  # its provenance is read back
    conv = medgan.save_scan(again, tmp_path / "conv", format="dicom", reference=again)  # what medgan convert does
    assert _series_number(conv) == first + 1000


def test_synthesis_seed_is_part_of_the_operation():
    from medgan.io.dicom_write import operation_key

    made = {"task": "synthesis", "synthetic": True, "model_sha256": "ab", "seed": 1}
    assert operation_key({"medgan": made}) != operation_key({"medgan": {**made, "seed": 2}})
    # a degradation's noise seed is drawn anew each run: not part of it
    deg = {"method": "interpolate", "factor": 2, "noise_std": 0.01, "seed": 5}
    assert operation_key({"degradation": deg}) == operation_key({"degradation": {**deg, "seed": 6}})

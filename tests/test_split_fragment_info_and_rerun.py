"""A slice split off a series whose larger rest is unusable: ``medgan info`` lists it as unusable, and a rerun of the
batch removes what an earlier run made of it.

Discovery splits a series whose slices differ in pixel spacing: one slice of a slightly other spacing is a usable
one-slice scan of its own, while the rest of the series, left with a gap, is unusable. ``medgan batch``, ``medgan
upscale FOLDER`` and ``medgan.load_scan`` refuse that slice ("only a part of its series"); ``medgan info`` listed it
as ``ok`` beside the unusable rest. A batch run that had upscaled that slice (an earlier version, or a run made while
the rest of the series was whole) left its one-slice output in OUT_ROOT under the rerun's ``unusable`` row, kept as
the outputs of a scan unusable for a passing cause are.

The series is real (15 slices of a GE EPI volume from the shared corpora), one slice's header changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from conftest import require_shared

import medgan
from medgan.errors import ScanReadError
from pipelines.batch.manifest import read_rows
from pipelines.cli import main

#: one volume (15 slices of 64x64, 3.75 mm pixels) of a real GE EPI series
GE_EPI = "dcm_qa_nih_ge_epi_interleaved_i_to_s"
#: the shipped 2-D model: it upscales a lone slice
MODEL_2D = "brain-mr-x2-2d"


def _write_series(folder: Path, odd: int) -> None:
    """The GE EPI volume written to ``folder``, slice ``odd`` with a pixel spacing 0.05 % off the others'."""
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted((require_shared() / GE_EPI / "input").glob("*.dcm"))[:15]):
        ds = pydicom.dcmread(path)
        if i == odd:
            ds.PixelSpacing = [3.751875, 3.751875]  # 3.75 in the other slices
        ds.save_as(folder / f"{i:02d}.dcm")


def _parts(root: Path) -> tuple[medgan.ScanRef, medgan.ScanRef]:
    """The (one-slice part, rest) discovery splits the series under ``root`` into."""
    refs = medgan.discover_scans(root)
    (part,) = [r for r in refs if len(r.paths) == 1]
    (rest,) = [r for r in refs if len(r.paths) > 1]
    return part, rest


def test_info_lists_the_slice_split_off_its_series_as_unusable(tmp_path: Path, capsys) -> None:
    root = tmp_path / "in"
    _write_series(root / "epi", odd=5)
    part, rest = _parts(root)
    assert part.usable and not rest.usable and "gap" in rest.reason  # discovery's view: the part alone is usable

    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith(part.id)]
    # was: "ok (split from a series of 15 files that differ in pixel spacing)"
    assert "unusable: only a part of its series (split from a series of 15 files" in line and " ok" not in line
    assert rest.id in line and "--series" in line
    assert "2 scan(s) found under" in out and ": 0 usable, 2 unusable" in out
    (rest_line,) = [ln for ln in out.splitlines() if ln.startswith(rest.id)]
    assert "unusable: gap of 10.0 mm" in rest_line  # the rest as before

    assert main(["info", str(root), "--json"]) == 0
    listed = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(listed) == {part.id, rest.id}
    assert listed[part.id]["usable"] is False and listed[part.id]["reason"].startswith("only a part of its series")
    assert listed[part.id]["paths"] == [str(p) for p in part.paths]  # the rest of its entry is discovery's
    assert listed[rest.id] == rest.to_dict()

    # the same reason as load_scan's refusal of the folder
    with pytest.raises(ScanReadError) as exc:
        medgan.load_scan(root / "epi")
    assert listed[part.id]["reason"].split("; the rest of it")[0] in str(exc.value)

    # the slice file itself, asked about alone, is a scan info lists as usable (nothing to be a part of)
    assert main(["info", str(part.paths[0]), "--json"]) == 0
    (alone,) = json.loads(capsys.readouterr().out)
    assert alone["usable"] is True


def test_a_rerun_removes_the_output_made_of_a_slice_now_refused_as_a_part_of_its_series(tmp_path: Path, caplog) -> None:
    """The earlier ``done`` row is made by this version, honestly: the odd slice is the series' last, so the rest
    (slices 0-13) has no gap, is usable, and the part is not a fragment; the batch upscales both. Then the rest
    loses a slice in the middle: the part's own file is unchanged (so its settings key is too, the case where an
    unusable scan's outputs are kept), but it is now a fragment of a series whose rest is unusable. An earlier
    medgan version's ``done`` row for the slice (before the batch refused fragments) reaches the same branch."""
    in_root, out_root = tmp_path / "in", tmp_path / "out"
    _write_series(in_root / "epi", odd=14)
    part, rest = _parts(in_root)
    assert part.usable and rest.usable and len(rest.paths) == 14

    assert main(["batch", "upscale", str(in_root), str(out_root), "--model", MODEL_2D, "--quiet"]) == 0
    first = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}
    assert first[part.id]["status"] == "done"
    made = [out_root / rel for rel in first[part.id]["outputs"]]
    assert [p.name for p in made] == [f"{part.id}.nii.gz", f"{part.id}.json"]
    assert tuple(medgan.load_scan(made[0]).shape) == (1, 128, 128)  # the one slice, upscaled (a 2-D image)

    (in_root / "epi" / "07.dcm").unlink()  # the rest now has a gap: the slice is only a part of its series
    part_now, rest_now = _parts(in_root)
    assert part_now.id == part.id and part_now.paths == part.paths and not rest_now.usable

    caplog.clear()
    assert main(["batch", "upscale", str(in_root), str(out_root), "--model", MODEL_2D, "--quiet"]) == 3
    rows = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}  # the last row of each scan
    row = rows[part.id]
    assert row["status"] == "unusable" and row["error"].startswith("only a part of its series")
    # was: the row listed the one-slice output and its sidecar, both still in OUT_ROOT
    assert row["outputs"] == [] and row["output_sha256"] == []
    assert not any(p.exists() for p in made)
    assert not list(out_root.rglob(f"{part.id}*"))
    for p in made:  # each removal is a warning naming the file and why
        rel = p.relative_to(out_root).as_posix()
        assert f"{part.id}: removed the earlier output {rel} (it is only a part of its series)" in caplog.text
    # the rest, its files changed, is unusable and its outputs go, as before
    assert rows[rest.id]["status"] == "unusable" and not list(out_root.rglob(f"{rest.id}*"))

    # and a third run has nothing left to remove: the same rows, no error
    assert main(["batch", "upscale", str(in_root), str(out_root), "--model", MODEL_2D, "--quiet"]) == 3
    again = {r["scan_id"]: r for r in read_rows(out_root / "manifest.jsonl")}
    assert again[part.id]["status"] == "unusable" and again[part.id]["outputs"] == []

"""A job spec linked into a project folder (one shared spec, ``proj/job.yaml -> ../shared/up.yaml``) takes its
relative paths from the folder it is named in, as the docs say ("relative to this file's folder"): resolved, it read
the shared folder's ``scans`` and would have written its output there."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.batch.manifest import read_rows
from pipelines.batch.spec import load_spec
from pipelines.cli import main

HITACHI = Path(__file__).resolve().parents[1] / "sample_data" / "dicom" / "dicom2nifti_hitachi_anatomical_001"


def test_a_linked_spec_reads_and_writes_beside_the_link(tmp_path: Path) -> None:
    shared, proj = tmp_path / "shared", tmp_path / "proj"
    shared.mkdir()
    (shared / "up.yaml").write_text("job: upscale\ninput: scans\noutput: out\nmodel: brain-mr-x2-2d\nworkers: 1\n")
    shutil.copytree(HITACHI, proj / "scans" / "series")
    (proj / "job.yaml").symlink_to(Path("..") / "shared" / "up.yaml")

    spec = load_spec(proj / "job.yaml")
    assert Path(spec.params["input"]) == proj / "scans" and Path(spec.params["output"]) == proj / "out"
    assert main(["run", str(proj / "job.yaml")]) == 0
    assert [r["status"] for r in read_rows(proj / "out" / "manifest.jsonl")] == ["done"]
    assert sorted(p.name for p in shared.iterdir()) == ["up.yaml"]  # nothing read or written beside the target

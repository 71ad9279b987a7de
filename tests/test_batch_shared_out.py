"""Two batch jobs writing into one OUT_ROOT resume independently: ``batch upscale`` and ``batch synthesize`` of the
same label-map tree share scan ids, and with resume keyed by scan id alone each run took the other job's row as the
scan's last one and redid every scan, back and forth."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import mni_label_map, save_tiny_sr, save_tiny_synthesizer

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained 3-D x2 SR checkpoint and a tiny untrained 2-D SPADE synthesizer (real save APIs)."""
    root = tmp_path_factory.mktemp("models")
    return save_tiny_sr(root / "sr.safetensors"), save_tiny_synthesizer(root / "syn.safetensors")


def test_upscale_and_synthesize_into_one_out_root_resume_independently(tmp_path, models):
    sr, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    mni_label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    mni_label_map(src / "s2" / "labels.nii.gz", (slice(50, 66), slice(80, 96), slice(70, 73)))
    upscale = ["batch", "upscale", str(src), str(out), "--model", str(sr), "--quiet"]
    synthesize = ["batch", "synthesize", str(src), str(out), "--model", str(syn), "--quiet"]

    def statuses(n: int) -> dict[str, list[str]]:
        by_job: dict[str, list[str]] = {}
        for row in read_rows(out / "manifest.jsonl")[n:]:
            by_job.setdefault(row["job"], []).append(row["status"])
        return by_job

    assert main(upscale) == 0
    assert main(synthesize) == 0
    assert statuses(0) == {"upscale": ["done", "done"], "synthesize": ["done", "done"]}
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert len(outputs) == 4  # <id>.nii.gz of upscale and <id>-synth-000.nii.gz of synthesize, per map
    assert main(upscale) == 0
    assert statuses(4) == {"upscale": ["skipped", "skipped"]}  # was: done, done (redone)
    assert main(synthesize) == 0
    assert statuses(6) == {"synthesize": ["skipped", "skipped"]}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == outputs

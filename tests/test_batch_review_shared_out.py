"""Two batch jobs writing into one OUT_ROOT resume independently: ``batch upscale`` and ``batch synthesize`` of the
same label-map tree share scan ids, and with resume keyed by scan id alone each run took the other job's row as the
scan's last one and redid every scan, back and forth."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained 3-D x2 SR checkpoint and a tiny untrained 2-D SPADE synthesizer (real save APIs)."""
    import torch

    from medgan.data.normalize import Normalization
    from medgan.infer.checkpoint import save_checkpoint
    from medgan.infer.synthesis import save_synthesizer
    from medgan.models.registry import build_generator

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    sr = build_generator({"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": [2, 2, 1]})
    sr_path = save_checkpoint(root / "sr.safetensors", sr, roi_size=32)
    gen = build_generator(
        {
            "arch": "spade",
            "spatial_dims": 2,
            "num_labels": 3,
            "channels": [8, 4],
            "z_dim": 4,
            "spade_hidden_channels": 4,
        }
    )
    norm = Normalization(
        method="percentile", offset=0.0, scale=100.0, lower=0.5, upper=99.5, data_min=0.0, data_max=100.0
    )
    syn_path = save_synthesizer(
        root / "syn.safetensors", gen, labels={0: "background", 1: "gm", 2: "wm"}, normalization=norm
    )
    return sr_path, syn_path


def label_map(dst: Path, box: tuple[slice, ...]) -> Path:
    """A real label map: argmax of background / MNI GM / MNI WM probabilities on a crop of the template grid."""
    mni = SAMPLE / "nifti" / "mni_icbm152_2009a_sym"
    gm, wm = (nib.load(mni / f"{t}.nii.gz").slicer[box] for t in ("gm", "wm"))
    g, w = np.asarray(gm.dataobj, dtype=np.float32), np.asarray(wm.dataobj, dtype=np.float32)
    labels = np.argmax(np.stack([np.full_like(g, 64), g, w]), axis=0).astype(np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, gm.affine), dst)
    return dst


def test_upscale_and_synthesize_into_one_out_root_resume_independently(tmp_path, models):
    sr, syn = models
    src, out = tmp_path / "labels", tmp_path / "out"
    label_map(src / "s1" / "labels.nii.gz", (slice(60, 76), slice(70, 86), slice(76, 80)))
    label_map(src / "s2" / "labels.nii.gz", (slice(50, 66), slice(80, 96), slice(70, 73)))
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

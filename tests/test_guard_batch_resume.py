"""Batch settings and resume: what a spec or a changed input says reaches the run (mutation review 24: a spec's
seed, mask and overlap could be dropped, its relative paths resolved from the wrong folder, a changed prediction
left unscored and a missing planned output marked done, and the suite still passed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, mni_label_map, save_tiny_sr, save_tiny_synthesizer

from pipelines.batch.manifest import read_rows
from pipelines.cli import main

SAMPLE = REPO / "sample_data" / "nifti"
CROPS = [
    (
        "a/t1.nii.gz",
        "mni_icbm152_2009a_sym/t1.nii.gz",
        (slice(60, 92), slice(70, 102), slice(76, 82)),
    ),
    (
        "b/anat.nii.gz",
        "nibabel/anatomical.nii",
        (slice(0, 32), slice(4, 36), slice(8, 14)),
    ),
]


def _crop(src: Path, dst: Path, box, noise: float = 0.0, seed: int = 0) -> Path:
    img = nib.load(src).slicer[box]
    data = np.asarray(img.dataobj, dtype=np.float32)
    if noise:  # a "prediction": the real reference with seeded noise
        data = data + np.random.default_rng(seed).normal(0, noise * float(data.std()), data.shape).astype(np.float32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine), dst)
    return dst


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_sr(tmp_path_factory.mktemp("model") / "tiny_x2.safetensors")


@pytest.fixture
def trees(tmp_path) -> Path:
    for rel, src, box in CROPS:
        _crop(SAMPLE / src, tmp_path / "hr" / rel, box)
        _crop(SAMPLE / src, tmp_path / "sr" / rel, box, noise=0.05)
    return tmp_path


def _statuses(out: Path, since: int) -> dict[str, str]:
    return {r["input"]: r["status"] for r in read_rows(out / "manifest.jsonl")[since:]}


def test_evaluate_rescores_a_scan_whose_prediction_changed(trees):
    """runner._inputs: the settings key must fingerprint the prediction, not only the reference; else a
    re-generated prediction keeps the old metrics ("skipped") and the report shows numbers of a file that is gone."""
    out = trees / "eval"
    args = [
        "batch",
        "evaluate",
        str(trees / "sr"),
        str(trees / "hr"),
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    before = {r["input"]: r["metrics"] for r in read_rows(out / "manifest.jsonl")}
    _crop(SAMPLE / CROPS[0][1], trees / "sr" / CROPS[0][0], CROPS[0][2], noise=0.3, seed=1)  # a new prediction
    assert main(args) == 0
    assert _statuses(out, 2) == {"a/t1.nii.gz": "done", "b/anat.nii.gz": "skipped"}
    after = {r["input"]: r["metrics"] for r in read_rows(out / "manifest.jsonl")[2:]}
    assert after["a/t1.nii.gz"][0]["psnr"] < before["a/t1.nii.gz"][0]["psnr"]  # scored on the new, noisier file


def _spec(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(text)
    return folder / "job.yaml"


def _find(obj, key):
    """Every value of ``key`` anywhere in a JSON document."""
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == key] + [x for v in obj.values() for x in _find(v, key)]
    if isinstance(obj, list):
        return [x for v in obj for x in _find(v, key)]
    return []


def test_spec_overlap_reaches_the_run(trees, tiny_model):
    """spec.run_job: a spec's ``overlap`` must reach run_upscale (recorded in each output's provenance sidecar)."""
    out = trees / "up"
    spec = _spec(
        trees / "s",
        f"job: upscale\ninput: {trees / 'hr'}\noutput: {out}\nmodel: {tiny_model}\noverlap: 0.5\n",
    )
    assert main(["run", str(spec), "--quiet"]) == 0
    rows = read_rows(out / "manifest.jsonl")
    sidecars = [json.loads((out / o).read_text()) for r in rows for o in r["outputs"] if o.endswith(".json")]
    assert len(sidecars) == 2 and all(_find(s, "overlap") == [0.5] for s in sidecars)


def test_spec_mask_reaches_the_run(trees):
    """spec.run_job: a spec's ``mask: none`` must reach run_evaluate (else the metrics are silently masked)."""
    spec = _spec(
        trees / "s",
        f"job: evaluate\npred: {trees / 'sr'}\nref: {trees / 'hr'}\noutput: {trees / 'e1'}\nmask: none\n",
    )
    assert main(["run", str(spec), "--quiet"]) == 0
    fractions = [m["mask_fraction"] for r in read_rows(trees / "e1" / "manifest.jsonl") for m in r["metrics"]]
    assert fractions and all(f == 1.0 for f in fractions)
    # the same trees under the default foreground mask do score fewer voxels: the check above can fail
    assert (
        main(
            [
                "batch",
                "evaluate",
                str(trees / "sr"),
                str(trees / "hr"),
                str(trees / "e2"),
                "--quiet",
            ]
        )
        == 0
    )
    assert any(m["mask_fraction"] < 1.0 for r in read_rows(trees / "e2" / "manifest.jsonl") for m in r["metrics"])


def test_spec_seed_reaches_the_run(tmp_path):
    """spec.run_job: a spec's ``seed`` must reach run_synthesize (else every 'seed: 7' gives seed 0's images)."""
    from pipelines.batch.jobs import scan_seed

    model = save_tiny_synthesizer(tmp_path / "synth.safetensors")
    mni_label_map(
        tmp_path / "labels" / "s1" / "labels.nii.gz",
        (slice(60, 76), slice(70, 86), slice(76, 78)),
    )
    out = tmp_path / "out"
    spec = _spec(
        tmp_path / "s",
        f"job: synthesize\ninput: {tmp_path / 'labels'}\noutput: {out}\nmodel: {model}\nseed: 7\n",
    )
    assert main(["run", str(spec), "--quiet"]) == 0
    (row,) = read_rows(out / "manifest.jsonl")
    assert row["status"] == "done" and row["seed"] == scan_seed(7, row["scan_id"]) != scan_seed(0, row["scan_id"])
    side = json.loads((out / row["outputs"][1]).read_text())
    assert side["seed"] == row["seed"]


def test_set_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch, tiny_model):
    """spec.load_spec: ``--set output=rel`` is relative to the current folder (as documented), not the spec's."""
    hr = tmp_path / "hr"
    _crop(SAMPLE / CROPS[1][1], hr / CROPS[1][0], CROPS[1][2])
    spec = _spec(
        tmp_path / "specs",
        f"job: upscale\ninput: {hr}\noutput: elsewhere\nmodel: {tiny_model}\n",
    )
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["run", str(spec), "--quiet", "--set", "output=mine"]) == 0
    assert (tmp_path / "cwd" / "mine" / "manifest.jsonl").is_file()
    assert not (tmp_path / "specs" / "mine").exists()


def test_spec_paths_are_relative_to_the_spec_file(tmp_path, monkeypatch, tiny_model):
    """spec.load_spec: relative paths in the file are relative to the file's folder (as documented), whatever the
    working directory: resolved against the cwd, a spec run from elsewhere reads another tree or writes elsewhere."""
    project = tmp_path / "project"
    _crop(SAMPLE / CROPS[1][1], project / "hr" / CROPS[1][0], CROPS[1][2])
    spec = _spec(
        project / "specs",
        f"job: upscale\ninput: ../hr\noutput: ../sr\nmodel: {tiny_model}\n",
    )
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["run", str(spec), "--quiet"]) == 0
    assert [r["input"] for r in read_rows(project / "sr" / "manifest.jsonl")] == [CROPS[1][0]]


def test_a_job_whose_planned_output_was_not_written_fails_its_scan(tmp_path, tiny_model):
    """jobs._finish: a scan is ``done`` only when every output its task plans exists. Without the check the row is
    ``done`` (exit 0) with fewer hashes than outputs, one output nowhere on disk."""
    import dataclasses

    from medgan.infer.superres import SuperResolver
    from medgan.io.discover import discover_scans
    from pipelines.batch import jobs
    from pipelines.batch.plan import plan_upscale

    hr = tmp_path / "hr"
    _crop(SAMPLE / CROPS[1][1], hr / CROPS[1][0], CROPS[1][2])
    out = tmp_path / "out"
    (task,) = plan_upscale(discover_scans(hr), hr, out)
    task = dataclasses.replace(task, outputs=(*task.outputs, "b/never-written.nii.gz"))  # the save writes 2 of 3
    sha = SuperResolver.from_pretrained(str(tiny_model)).sha256
    options = jobs.UpscaleOptions(model=str(tiny_model), model_sha256=sha, out_root=str(out), threads=1)
    row = jobs.upscale_job(task, options)
    assert row["status"] == "failed" and "never-written.nii.gz" in row["error"]
    assert (out / task.outputs[0]).is_file()  # the job did run: only the missing output fails it

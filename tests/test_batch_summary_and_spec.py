"""The batch summary line, job-spec checks and the manifest's unreadable lines.

- The summary was built in three places that disagreed (``done`` / ``upscaled``, separators, only ``medgan
  upscale`` named the failed and unusable scans), and ``medgan batch --quiet`` ended with exit 3 printing nothing.
- ``method: null`` passed spec validation and the evaluation report lost every metric, exit 0.
- A key written twice in a spec was silently taken from its last occurrence; ``overlap: 1e-1`` (text to YAML 1.1)
  was refused although ``--overlap 1e-1`` is accepted.
- A manifest line half-written by a killed run gave the same warning on every later run, forever.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import save_tiny_sr

from medgan.errors import ConfigError, MedganError
from pipelines.batch.manifest import read_rows
from pipelines.batch.spec import load_spec
from pipelines.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory) -> Path:
    """A tiny untrained 3-D x2 SR checkpoint (real save API)."""
    return save_tiny_sr(tmp_path_factory.mktemp("models") / "sr.safetensors")


def tree_with_a_broken_file(root: Path) -> Path:
    """``a/anat.nii.gz`` (a real crop of the nibabel sample) and ``d/broken.nii`` (not a NIfTI file: unusable)."""
    img = nib.load(SAMPLE / "nifti" / "nibabel" / "anatomical.nii").slicer[8:24, 10:26, 8:12]
    (root / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), root / "a" / "anat.nii.gz")
    (root / "d").mkdir()
    (root / "d" / "broken.nii").write_bytes(b"not a NIfTI file at all" * 20)
    return root


def last_log_line(out: Path) -> str:
    return (out / "medgan.log").read_text().splitlines()[-1]


# ------------------------------------------------------------------ the summary line


def test_one_summary_line_printed_logged_and_on_stderr_when_quiet_fails(tmp_path, tiny_sr, capsys):
    src, out = tree_with_a_broken_file(tmp_path / "in"), tmp_path / "out"
    args = ["batch", "upscale", str(src), str(out), "--model", str(tiny_sr)]
    assert main(args) == 3
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("2 scan(s): 1 done; 1 unusable: broken-") and "(d/broken.nii)" in printed, printed
    assert printed.endswith(f"; manifest {out / 'manifest.csv'}")
    assert last_log_line(out).endswith(f"medgan batch upscale finished: {printed}")
    # --quiet and exit 3: the line (naming the unusable scan) still comes, on stderr; a Slurm job saw nothing
    assert main([*args, "--quiet"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    quiet = captured.err.strip()
    assert quiet.startswith("2 scan(s): 1 skipped as already done (--force redoes them); 1 unusable: broken-"), quiet
    assert last_log_line(out).endswith(f"finished: {quiet}")
    # medgan upscale on the tree prints the same line (its redo option is --overwrite)
    assert main(["upscale", str(src), str(out), "--model", str(tiny_sr)]) == 3
    tree = capsys.readouterr().out.strip()
    assert tree == quiet.replace("--force", "--overwrite"), tree


def test_quiet_prints_nothing_when_every_scan_is_done(tmp_path, tiny_sr, capsys):
    src, out = tree_with_a_broken_file(tmp_path / "in"), tmp_path / "out"
    (src / "d" / "broken.nii").unlink()
    assert main(["batch", "upscale", str(src), str(out), "--model", str(tiny_sr), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------ specs


def spec(folder: Path, text: str) -> Path:
    path = folder / "job.yaml"
    path.write_text(text)
    return path


def test_a_spec_with_method_null_is_refused_before_anything_runs(tmp_path, capsys):
    ref = tmp_path / "ref" / "a"
    ref.mkdir(parents=True)
    (ref / "MR_small.dcm").write_bytes((SAMPLE / "dicom" / "pydicom_mr_small" / "MR_small.dcm").read_bytes())
    path = spec(tmp_path, "job: evaluate\npred: ref\nref: ref\noutput: ev\nmethod: null\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: 'method' must be non-empty text, got None"):
        load_spec(path)
    assert main(["run", str(path), "--quiet"]) == 1
    assert "'method' must be non-empty text" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    # the Python entry point, which a spec does not guard: refused too, before the output folder is made
    from pipelines.batch.runner import run_evaluate

    with pytest.raises(MedganError, match="method name must be non-empty text"):
        run_evaluate(tmp_path / "ref", tmp_path / "ref", tmp_path / "ev", method=None)
    assert not (tmp_path / "ev").exists()
    assert load_spec(spec(tmp_path, "job: evaluate\npred: ref\nref: ref\noutput: ev\n")).params["method"] == "SR"


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path):
    path = spec(
        tmp_path,
        "job: upscale\ninput: scans_site_A\noutput: results\nmodel: brain-mr-x2-2d\nforce: false\n"
        "input: scans_site_B\nforce: true\n",
    )
    with pytest.raises(ConfigError, match=r"job\.yaml: key 'input' is given twice \(lines 2 and 6\)"):
        load_spec(path)


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    text = "job: upscale\ninput: in\noutput: out\nmodel: brain-mr-x2-2d\noverlap: 1e-1\n"
    assert load_spec(spec(tmp_path, text)).params["overlap"] == pytest.approx(0.1)
    assert load_spec(spec(tmp_path, text), {"overlap": "5E-1"}).params["overlap"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"'overlap' must be a number in \[0, 1\), got 'nan'"):
        load_spec(spec(tmp_path, text.replace("1e-1", "nan")))  # only decimal or scientific notation
    evaluate = "job: evaluate\npred: p\nref: r\noutput: o\ndata_range: 4e3\n"
    assert load_spec(spec(tmp_path, evaluate)).params["data_range"] == pytest.approx(4000.0)


# ------------------------------------------------------------------ manifest


def test_a_half_written_manifest_line_is_reported_once_and_resume_still_holds(tmp_path, tiny_sr, caplog):
    src, out = tree_with_a_broken_file(tmp_path / "in"), tmp_path / "out"
    (src / "d" / "broken.nii").unlink()
    args = ["batch", "upscale", str(src), str(out), "--model", str(tiny_sr), "--quiet"]
    assert main(args) == 0
    jsonl = out / "manifest.jsonl"
    good = jsonl.read_bytes()
    with open(jsonl, "ab") as fh:  # what a run killed in the middle of an append leaves
        fh.write(b'{"scan_id": "anat-1234", "status": "do')

    def unreadable() -> list[str]:
        return [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]

    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
        assert len(unreadable()) == 1 and "last line (an interrupted write)" in unreadable()[0]
        assert [r["status"] for r in read_rows(jsonl)] == ["done", "skipped"]  # resumed: skipped, not redone
        assert jsonl.read_bytes().startswith(good)
        caplog.clear()
        assert main(args) == 0
        assert main(args) == 0
        assert unreadable() == []
    assert [r["status"] for r in read_rows(jsonl)] == ["done", "skipped", "skipped", "skipped"]

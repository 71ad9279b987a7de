"""The output rules of the one-scan commands (:func:`pipelines.commands._outputs.check_outputs`), on real scans:
two outputs of one run never share a file (a NIfTI image or its JSON sidecar), an unrelated file where the
sidecar goes needs ``--overwrite``, and no input (``labels --t1`` included) is ever replaced."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO, mni_t1_path, mni_tissue_slice, save_tiny_synthesizer

from pipelines import cli

MNI = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"


@pytest.mark.parametrize("labels_name", ["syn.nii.gz", "syn.nii"], ids=["same-file", "same-sidecar"])
def test_synthesize_refuses_a_labels_out_sharing_a_file_with_out(tmp_path, capsys, labels_name):
    # syn.nii and syn.nii.gz share the sidecar syn.json: one provenance would replace the other
    model = save_tiny_synthesizer(tmp_path / "tiny.safetensors")
    labels = mni_tissue_slice(tmp_path / "labels.nii.gz", 90)
    out = tmp_path / "syn.nii.gz"
    argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out)]
    assert cli.main([*argv, "--labels-out", str(tmp_path / labels_name)]) == cli.EXIT_FAILED
    assert "would be written to the same file" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "syn.json").exists()


def test_degrade_refuses_an_unrelated_file_where_the_sidecar_goes(tmp_path, capsys):
    notes = tmp_path / "low.json"
    notes.write_text('{"my": "notes"}')
    argv = ["degrade", str(mni_t1_path()), str(tmp_path / "low.nii.gz"), "--factor", "2"]
    assert cli.main(argv) == cli.EXIT_FAILED
    assert f"its sidecar {notes} exists" in capsys.readouterr().err
    assert notes.read_text() == '{"my": "notes"}' and not (tmp_path / "low.nii.gz").exists()


def test_labels_never_replaces_the_t1_even_with_overwrite(tmp_path, capsys):
    t1 = shutil.copy(MNI / "t1.nii.gz", tmp_path / "t1.nii.gz")
    before = (tmp_path / "t1.nii.gz").read_bytes()
    argv = ["labels", str(t1), "--gm", str(MNI / "gm.nii.gz"), "--wm", str(MNI / "wm.nii.gz"), "--t1", str(t1)]
    assert cli.main([*argv, "--overwrite"]) == cli.EXIT_FAILED
    assert "is the input" in capsys.readouterr().err
    assert (tmp_path / "t1.nii.gz").read_bytes() == before


def test_info_shows_a_bidi_override_in_a_folder_name_escaped(tmp_path, capsys):
    # U+202E reverses the text shown after it on a terminal: a folder "d\u202ezg.iin" reads as "dnii.gz"
    folder = tmp_path / "d\u202ey"
    folder.mkdir()
    shutil.copy(mni_t1_path(), folder / "t1.nii.gz")
    assert cli.main(["info", str(folder)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "\u202e" not in out and "d\\u202ey" in out

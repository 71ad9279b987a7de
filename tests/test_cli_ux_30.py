"""Common command-line mistakes of a new user (UX review 30), each answered in the terms of the command typed.

1. An unknown option, or one of another command (``medgan upscale IN OUT --threads 2``), printed medgan's top-level
   usage and ``medgan: error: unrecognized arguments``; now the sub-command's usage and error (also for ``medgan
   batch upscale``), with the commands that do have that option, else ``see medgan COMMAND --help``; exit 2.
2. Plain arguments to a command that takes options (``medgan synthesize --model M lab.nii.gz syn.nii.gz``) said
   only "the following arguments are required: --labels, --out"; now it names the options and what was given.
3. IN and OUT swapped (``medgan degrade --factor 2 missing_lr.nii.gz my_scan.nii``) answered "my_scan.nii: exists;
   ... pass --overwrite", inviting the user to overwrite their scan; now the missing IN is named first, exit 1.
4. A mistyped output name (``lr.nii.gzz``, ``"lr.nii.gz "``) silently became a DICOM series folder, "wrote
   lr.nii.gzz", exit 0; now refused (exit 1, nothing written), and a DICOM output says it wrote a series.
5. ``--help`` of degrade, convert, synthesize, labels, demo, train-sr and train-cgan shows real example commands.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA

from pipelines import cli

ANATOMICAL = SAMPLE_DATA / "nifti" / "nibabel" / "anatomical.nii"
MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``medgan ARGV``, which must end as a usage error (exit 2); return its stderr."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "command", "bad", "hint"),
    [
        (
            ["upscale", "lr.nii.gz", "sr.nii.gz", "--threads", "2"],
            "upscale",
            "--threads 2",
            "--threads is an option of:",
        ),
        (["upscale", "lr.nii.gz", "sr.nii.gz", "--foo"], "upscale", "--foo", "see medgan upscale --help"),
        (["degrade", "a.nii", "b.nii", "--factor", "2", "--model", "x"], "degrade", "--model x", "medgan upscale"),
        (
            ["batch", "upscale", "in", "out", "--foo", "3"],
            "batch upscale",
            "--foo 3",
            "see medgan batch upscale --help",
        ),
        (["convert", "a.nii", "b.nii", "-v"], "convert", "-v", "give it before the command"),
    ],
)
def test_unknown_option_is_the_subcommands_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], command: str, bad: str, hint: str
) -> None:
    err = _usage_error(capsys, argv)
    assert f"usage: medgan {command} [-h]" in err, err  # was: usage: medgan [-h] [--version] [-v] COMMAND ...
    assert "usage: medgan [-h]" not in err
    assert f"medgan {command}: error: unrecognized arguments: {bad}\n" in err, err
    assert hint in err, err


def test_an_option_of_other_commands_names_them(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(capsys, ["upscale", "lr.nii.gz", "sr.nii.gz", "--threads", "2"])
    owners = err.split("--threads is an option of: ", 1)[1].splitlines()[0].split(", ")
    assert "medgan batch upscale" in owners and "medgan upscale" not in owners, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["synthesize", "--model", "brain-t1-tissue-2d", "lab.nii.gz", "syn.nii.gz"],
            "medgan synthesize: error: medgan synthesize takes --labels IN --out OUT "
            "(got 2 plain arguments: lab.nii.gz, syn.nii.gz)",
        ),
        (
            ["evaluate", "sr.nii.gz", "ref.nii", "ev9"],
            "(got 3 plain arguments: sr.nii.gz, ref.nii, ev9)",
        ),
        (  # an option's value is not a plain argument
            ["synthesize", "--model", "brain-t1-tissue-2d", "--labels", "lab.nii.gz", "-n", "2", "syn.nii.gz"],
            "medgan synthesize takes --out OUT (got 1 plain argument: syn.nii.gz)",
        ),
    ],
)
def test_plain_arguments_to_an_options_command_are_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    err = _usage_error(capsys, argv)
    assert expected in err, err  # was: "the following arguments are required: --labels, --out"
    assert f"usage: medgan {argv[0]}" in err


def test_required_options_without_plain_arguments_keep_argparses_message(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(capsys, ["synthesize", "--model", "brain-t1-tissue-2d"])
    assert "the following arguments are required: --labels, --out" in err, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", [["degrade", "--factor", "2"], ["convert"]])
def test_swapped_in_and_out_name_the_missing_input_not_the_existing_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    scan = tmp_path / "my_t1.nii"
    shutil.copyfile(ANATOMICAL, scan)
    before = _digest(scan)
    missing = tmp_path / "missing_lr.nii.gz"

    assert cli.main([*command, str(missing), str(scan)]) == 1

    err = capsys.readouterr().err
    assert f"{missing}: no such file or folder (IN comes before OUT)" in err, err
    assert "--overwrite" not in err  # was: "my_t1.nii: exists; choose another output name or pass --overwrite"
    assert _digest(scan) == before and not missing.exists()


def test_labels_names_a_missing_map_before_an_existing_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.nii.gz"
    shutil.copyfile(MNI / "gm.nii.gz", out)
    missing = tmp_path / "wm_typo.nii.gz"

    assert cli.main(["labels", "--gm", str(MNI / "gm.nii.gz"), "--wm", str(missing), str(out)]) == 1

    err = capsys.readouterr().err
    assert f"{missing}: no such file or folder" in err and "--overwrite" not in err, err


@pytest.mark.parametrize("name", ["lr.nii.gzz", "lr.nii.gz ", "lr.nii.bak", "ct.dcm2"])
@pytest.mark.parametrize("command", [["degrade", "--factor", "2"], ["convert"]])
def test_a_mistyped_output_name_is_refused_not_written_as_dicom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], name: str
) -> None:
    out = tmp_path / name

    assert cli.main([*command, str(ANATOMICAL), str(out)]) == 1

    err = capsys.readouterr().err
    assert "write NIfTI as .nii or .nii.gz, or give a folder name without extension for a DICOM series" in err, err
    assert ("ends in white space" if name != name.rstrip() else f"{out}: unknown extension") in err, err
    assert list(tmp_path.iterdir()) == []  # was: a folder of IM*.dcm named lr.nii.gzz, exit 0


@pytest.mark.parametrize("command", [["degrade", "--factor", "2"], ["convert"]])
def test_a_dicom_output_says_it_wrote_a_series_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, command: list[str]
) -> None:
    out = tmp_path / "run.2024-01"  # a folder name with a dot that is no scan extension: still a DICOM series
    caplog.set_level(logging.INFO, logger="pipelines.commands")

    assert cli.main([*command, str(ANATOMICAL), str(out)]) == 0

    slices = sorted(out.glob("IM*.dcm"))
    assert slices
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert lines and lines[-1].startswith(f"wrote a DICOM series ({len(slices)} files) into folder {out}/"), lines


EXAMPLE_COMMANDS = ["degrade", "convert", "synthesize", "labels", "demo", "train-sr", "train-cgan"]


def _examples(capsys: pytest.CaptureFixture[str], command: str) -> list[list[str]]:
    """The example command lines of ``medgan COMMAND --help``, split as a shell would."""
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "\nexamples:\n" in text, text  # was: no example in any of these helps
    block = text.split("\nexamples:\n", 1)[1].splitlines()
    words = [shlex.split(line, comments=True) for line in block if line.strip().startswith(("medgan ", "torchrun "))]
    assert 1 <= len(words) <= 3
    return [w[w.index("medgan") + 1 :] for w in words]  # `torchrun ... -m medgan train-sr CONFIG` too


@pytest.mark.parametrize("command", EXAMPLE_COMMANDS)
def test_help_shows_examples_that_the_parser_takes(capsys: pytest.CaptureFixture[str], command: str) -> None:
    for argv in _examples(capsys, command):
        assert argv[0] == command
        args = cli.build_parser().parse_args(argv)  # a usage error would exit
        for value in vars(args).values():  # the sample data and example configs named exist
            if isinstance(value, str) and value.startswith(("sample_data/", "/")) and "medgan-demo" not in value:
                path = value if value.startswith("/") else str(SAMPLE_DATA.parent / value)
                assert Path(path).exists(), (command, value)


@pytest.mark.parametrize("command", ["degrade", "convert"])
def test_the_degrade_and_convert_examples_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    (tmp_path / "sample_data").symlink_to(SAMPLE_DATA)
    monkeypatch.chdir(tmp_path)
    for argv in _examples(capsys, command):
        assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
        assert Path(argv[2]).exists()

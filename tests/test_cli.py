"""The `medgan` console script: version, help, usage errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medgan import __version__
from pipelines import cli


def test_version_flag_prints_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"medgan {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == cli.EXIT_USAGE
    assert "usage: medgan" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == cli.EXIT_USAGE


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_every_registered_command_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no sub-command registered"
    for name, subparser in sub.choices.items():
        assert subparser.format_help().startswith(f"usage: medgan {name}")

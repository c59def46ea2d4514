"""Package-level promises: no torch on import, a working console script, the CLI's exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nucleoscope.cli import COMMANDS, main


def test_import_does_not_import_torch():
    code = ("import sys, nucleoscope, nucleoscope.cli, nucleoscope.pipeline, nucleoscope.segment, "
            "nucleoscope.segment.classic, nucleoscope.io, nucleoscope.qc, nucleoscope.postprocess\n"
            "from nucleoscope.cli import _build_parser; _build_parser()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_registered_command_has_help(capsys):
    for name in COMMANDS:  # every registered command must be built: the dispatcher skips missing ones
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: nucleoscope " + name in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "nucleoscope", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("nucleoscope ")

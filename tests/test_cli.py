"""The command line itself: every command is listed and loads, and a match run reports what it used."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from laionet.cli import SUBCOMMANDS, main


def test_every_command_is_listed_and_loads():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in result.output
    for name in main.list_commands(None):
        command = main.get_command(None, name)
        assert command is not None and command.name == name
        help_result = CliRunner().invoke(main, [name, "--help"])
        assert help_result.exit_code == 0 and "Usage: " in help_result.output, (name, help_result.output)


def test_lazy_commands_are_not_imported_by_the_cli():
    code = ("import sys, laionet.cli\n"
            "loaded = [m for m in sys.modules if m.endswith('.cli') and m != 'laionet.cli']\n"
            "assert loaded == [], loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_versions_name_what_the_process_loaded():
    code = ("import json, sys, numpy, pyarrow\n"
            "from laionet.io.manifest import package_versions\n"
            "print(json.dumps(package_versions()))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    import json

    import numpy
    import pyarrow

    versions = json.loads(out)
    assert versions["numpy"] == numpy.__version__ and versions["pyarrow"] == pyarrow.__version__
    assert "torch" not in versions and "laionet" in versions  # not loaded: it cannot have shaped the result

import subprocess
import sys

import pytest

from cryofac import __version__
from cryofac.cli import COMMANDS, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cryofac.cli", *args], capture_output=True, text=True
    )


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_one_line_error():
    proc = run("no-such-command")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_loads(name, capsys):
    assert main([name, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_help_imports_no_web_or_database_code():
    code = (
        "import sys; from cryofac.cli import main; main(['--help']); "
        "bad = [m for m in ('flask', 'sqlalchemy') if m in sys.modules]; print(bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout


def test_a_commands_exit_code_is_kept():
    import click

    from cryofac.cli import cli

    @click.command("exit-three")
    @click.pass_context
    def exit_three(ctx):
        ctx.exit(3)

    cli.add_command(exit_three)
    try:
        assert main(["exit-three"]) == 3
    finally:
        cli.commands.pop("exit-three")

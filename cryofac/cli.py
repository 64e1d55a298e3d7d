"""The single ``cryofac`` command.

Subcommands are registered by dotted path and imported only when invoked, so
``cryofac motioncorr`` on a bare GPU node never imports Flask or SQLAlchemy.
Each part owns its commands in its own ``cli`` module; this file only lists them.

Errors a user can act on are raised as :class:`click.ClickException` (or a
subclass of :class:`cryofac.errors.CryofacError`) and shown as one line with a
non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from cryofac import __version__
from cryofac.errors import CryofacError

#: name -> (import path "module:attribute", one-line help shown by ``cryofac --help``).
#: Keep help text here so listing commands imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("cryofac.config_cli:config_group", "Check and show the configuration."),
    "simulate": ("pipeline.cli.simulate:simulate_group", "Simulate maps, micrographs, movies."),
    "motioncorr": ("pipeline.cli.motioncorr:motioncorr", "Align, dose-weight and sum movies."),
    "ctf": ("pipeline.cli.ctf:ctf", "Estimate defocus and astigmatism of micrographs."),
    "pick": ("pipeline.cli.pick:pick", "Pick particles on micrographs (blob or template)."),
    "extract": ("pipeline.cli.extract:extract", "Extract particle boxes into stacks and STAR."),
    "reconstruct": ("pipeline.cli.reconstruct:reconstruct", "From particles to a map and FSC."),
    "process": ("workflows.cli:process", "Run the Snakemake workflow on an acquisition folder."),
    "env": ("instrument_env.cli:env_group", "Room environment: readings, alarms, the gate."),
    "portal": ("portal.cli:portal_group", "The facility web portal: database, users, serving."),
    "demo": ("cryofac.demo:demo", "Run the whole facility on this machine, in one command."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            target, _help = self.lazy_commands[cmd_name]
            module_name, attribute = target.split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][1]))
            else:
                command = super().get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit=80)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="cryofac")
def cli() -> None:
    """cryofac: run a cryo-EM facility end to end.

    Commands are grouped by part: facility portal, room environment, and the
    image-processing pipeline steps. `cryofac demo` runs everything on one machine.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; turns user-facing errors into one line."""
    try:
        # invoke directly (not cli.main) so a command's ctx.exit(code) reaches the
        # Exit handler below with its code instead of being swallowed
        args = sys.argv[1:] if argv is None else list(argv)
        with cli.make_context("cryofac", args) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    except CryofacError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

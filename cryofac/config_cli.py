"""``cryofac config``: check and show configuration files."""

from __future__ import annotations

import click
import yaml

from cryofac import config as cfg


@click.group("config")
def config_group() -> None:
    """Check and show the facility and pipeline configuration."""


@config_group.command("check")
@click.option(
    "--facility",
    "facility_path",
    type=click.Path(dir_okay=False),
    help="Facility YAML (default: config/facility.yaml).",
)
@click.option(
    "--pipeline",
    "pipeline_path",
    type=click.Path(dir_okay=False),
    help="Pipeline YAML (default: config/pipeline.yaml).",
)
@click.option(
    "--limits",
    "limits_path",
    type=click.Path(dir_okay=False),
    help="Room limits YAML (default: config/limits.yaml).",
)
def check(facility_path: str | None, pipeline_path: str | None, limits_path: str | None) -> None:
    """Validate configuration files; prints one line per file, exits 1 on the first problem."""
    facility = cfg.load_facility(facility_path)
    click.echo(
        f"facility: OK ({len(facility['rooms'])} rooms, {len(facility['instruments'])} instruments, "
        f"{len(facility['sensors'])} sensors)"
    )
    cfg.load_pipeline(pipeline_path)
    click.echo("pipeline: OK")
    limits = cfg.load("limits", limits_path)
    click.echo(f"limits: OK ({len(limits.get('rooms', limits))} rooms)")


@config_group.command("show")
@click.argument("kind", type=click.Choice(cfg.KINDS))
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    help="File to show (default: the embedded default).",
)
def show(kind: str, path: str | None) -> None:
    """Print a validated configuration as YAML."""
    click.echo(yaml.safe_dump(cfg.load(kind, path), sort_keys=False, allow_unicode=True))

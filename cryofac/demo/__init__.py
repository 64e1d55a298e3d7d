"""``cryofac demo``: the whole facility on one machine, in one command.

What it does, in order (each step prints what it is doing):

1. creates a SQLite database in ``--dir`` by running every migration, loads the
   default facility from ``config/`` and seeds one user per role;
2. simulates the last three hours of the microscope rooms' sensors, with an
   air-conditioning failure part-way through, and advances the alarms;
3. starts the portal (real HTTP on ``--host:--port``) and a live feed of sensor
   readings through its readings API;
4. as the demo researcher, over the JSON API: a refused booking (the rule is named),
   then a vitrification slot and a microscope session; staff approve the session;
5. the environment gate: a start attempted during the air-conditioning fault is
   refused with its reasons; the real start, now, passes;
6. a simulated acquisition lands movie by movie in the session's raw-data folder
   while ``cryofac process --watch`` carries it through the pipeline (the movies are
   simulated ahead from the demo's start and land on a fixed schedule, so the
   acquisition rate is the preset's whatever the load: :mod:`cryofac.demo.microscope`);
7. the environmental provenance of the acquisition is written next to the data;
8. the researcher downloads the map over HTTP; its FSC against the simulated truth
   is measured;
9. the portal keeps serving until Ctrl-C (unless ``--no-serve``).

The booking rules are the facility's real ones (a Krios session must be booked
48 h ahead), so the demo books the session three days ahead and then, as staff,
runs it now instead of waiting: the only liberty it takes, and it says so.
"""

from __future__ import annotations

import click


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False),
    default="cryofac-demo",
    show_default=True,
    help="Folder for the database, raw data and processing runs.",
)
@click.option("--fast", is_flag=True, help="A small acquisition (a few minutes on 2 cores).")
@click.option("--no-serve", is_flag=True, help="Exit at the end instead of serving the portal.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--movies", type=click.IntRange(min=4), help="Movies to acquire [preset's].")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option("--fresh", is_flag=True, help="Delete --dir first if it holds an earlier demo.")
def demo(
    workdir: str,
    fast: bool,
    no_serve: bool,
    host: str,
    port: int,
    movies: int | None,
    seed: int,
    fresh: bool,
) -> None:
    """Run the whole facility on this machine, in one command.

    Creates the database and facility, simulates the rooms and an acquisition,
    processes it with the Snakemake workflow and serves the result in the portal.
    """
    import signal
    from pathlib import Path

    from cryofac.demo.story import Demo, preset

    # SIGTERM stops the demo like Ctrl-C: every child (portal, feed, cryofac process,
    # Snakemake, steps) is stopped on the way out, none left running
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = preset("fast" if fast else "full", movies=movies, seed=seed)
    story = Demo(Path(workdir), settings, host=host, port=port, fresh=fresh)
    story.run(serve=not no_serve)

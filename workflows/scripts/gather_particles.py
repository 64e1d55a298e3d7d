"""Gather the particles of every finished batch -> particles/particles.star + count.json."""

import sys
from pathlib import Path

from workflows.particles import gather, write_count

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - tracebacks go to the job log
stars = [Path(status).with_name("particles.star") for status in snakemake.input]
count = gather(stars, snakemake.params.star, state_dir=".cryofac", root=".")
write_count(snakemake.output.counts, count, len(stars))

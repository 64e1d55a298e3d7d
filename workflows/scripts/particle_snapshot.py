"""The first N gathered particles -> reconstruct/p<N>/input_particles.star."""

import sys

from workflows.particles import snapshot

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - tracebacks go to the job log
snapshot(
    snakemake.params.gathered,
    int(snakemake.wildcards.n),
    snakemake.output[0],
    state_dir=".cryofac",
    root=".",  # paths relative to the run folder, where Snakemake runs the rule
)

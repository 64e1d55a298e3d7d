"""Write a batch's movie list (its fixed membership), atomically."""

import sys

from workflows.tables import atomic_write_text

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - tracebacks go to the job log
atomic_write_text(snakemake.output[0], "".join(f"{m}\n" for m in snakemake.params.movies))

"""Per-movie statistics of one finished batch -> batches/<batch>/movies.tsv."""

import sys
from pathlib import Path

from workflows.summary import write_batch_table

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - tracebacks go to the job log
write_batch_table(Path(snakemake.input.manifest).parent, snakemake.output[0])

"""Per-movie statistics of one finished batch -> batches/<batch>/movies.tsv,
after PNG thumbnails of its micrographs (thumbnails/<stem>_mic.png, _ps.png)."""

import sys
from pathlib import Path

from workflows.summary import write_batch_table
from workflows.thumbnails import write_thumbnails

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - tracebacks go to the job log
batch_dir = Path(snakemake.input.manifest).parent
for line in (batch_dir / "motioncorr" / "ok.txt").read_text().splitlines():
    if line.strip():
        try:
            write_thumbnails(line.strip(), snakemake.params.thumbnails)
        except (OSError, ValueError) as exc:  # a thumbnail is never worth failing a batch
            print(f"thumbnail of {line.strip()} skipped: {exc}", file=sys.stderr)
write_batch_table(batch_dir, snakemake.output[0])

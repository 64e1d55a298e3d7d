"""Whether a ``--watch`` pass has anything to do, decided without starting Snakemake.

Starting Snakemake on a 50,000-movie run folder costs tens of seconds (it builds the
whole DAG) and writes a log. A pass is *idle* when, since the last pass that
finished cleanly with the same configuration and workflow code:

- no new batch can be cut from the eligible movies (``batching.plan_batches``),
- every batch has its ``movies.tsv`` (it finished),
- the particles were gathered after the last batch's extraction, and
- the reconstruction due at the gathered particle count exists (or is running).

Cost: one ``scandir`` of the raw folder, one read of each manifest, one ``stat``
per batch. An idle pass writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workflows import batching

WORKFLOW_DIR = Path(__file__).resolve().parent
LAST_PASS = "last_pass.json"


def code_version() -> str:
    """SHA-256 (16 hex digits) of the Snakefile, rules, scripts and workflow modules."""
    digest = hashlib.sha256()
    files = [WORKFLOW_DIR / "Snakefile", *sorted(WORKFLOW_DIR.glob("rules/*.smk"))]
    files += sorted(WORKFLOW_DIR.glob("scripts/*.py")) + sorted(WORKFLOW_DIR.glob("*.py"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(config: dict) -> str:
    """What a pass's result depends on besides the files: configuration and code."""
    text = json.dumps({"config": config, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def record_pass(state_dir: Path, print_: str) -> None:
    """After a clean pass: remember its fingerprint (only when it changed)."""
    from cryofac.fileio import atomic_write

    path = state_dir / LAST_PASS
    text = json.dumps({"fingerprint": print_}) + "\n"
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    atomic_write(path, text)


def forget_pass(state_dir: Path) -> None:
    """A pass failed or was stopped: the next one must run Snakemake."""
    (state_dir / LAST_PASS).unlink(missing_ok=True)


def is_idle(
    out: Path,
    state_dir: Path,
    scan: batching.MovieScan,
    config: dict,
    reconstruction_running: bool = False,
) -> bool:
    """True when a pass would do nothing (see the module docstring).

    ``reconstruction_running``: a reconstruction runs beside preprocessing; the one due
    is then on its way (a later one can only start once it ends), so a missing
    ``result.json`` gives the preprocessing pass nothing to do."""
    try:
        last = json.loads((state_dir / LAST_PASS).read_text())
    except (OSError, ValueError):
        return False
    if last.get("fingerprint") != fingerprint(config):
        return False
    existing = batching.read_manifests(out)
    batches, _waiting = batching.plan_batches(
        existing, scan.eligible, config["batch_size"], flush=False
    )
    if len(batches) != len(existing):
        return False
    newest = 0.0
    for batch in existing:
        folder = out / batching.BATCHES_DIR / batch
        try:
            os.stat(folder / "movies.tsv")  # the batch finished
            # what gathering depends on (rule gather_particles): the extraction's status;
            # the batch table may be written after the gathering, so it is no measure
            newest = max(newest, os.stat(folder / "extract" / "status.tsv").st_mtime)
        except FileNotFoundError:
            return False
    if not existing:
        return True
    counts = out / "particles" / "count.json"
    try:
        if os.stat(counts).st_mtime < newest:
            return False
        count = int(json.loads(counts.read_text())["particles"])
    except (OSError, ValueError, KeyError):
        return False
    downstream = config["downstream"]
    n = batching.reconstruction_target(downstream["min_particles"], downstream["growth"], count)
    if n is None or reconstruction_running:
        return True
    return (out / "reconstruct" / f"p{n:07d}" / "result.json").exists()

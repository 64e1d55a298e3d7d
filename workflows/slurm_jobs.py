"""SLURM jobs of a run folder: what was submitted, where it stands, why it failed.

`cryofac process` with a SLURM profile records every job the executor plugin
submits (``Job N has been submitted with SLURM jobid X (log: ...)`` in Snakemake's
output) in ``OUT/.cryofac/slurm_submitted.tsv``, asks ``sacct`` (slurmdbd) for
their state, node, resources and SLURM's reason, and writes ``OUT/cluster_jobs.tsv``
(one row per SLURM job). :func:`cluster_section` condenses that table for
``summary.json``. :func:`active_jobs` lists jobs still queued or running with the
run folder as working directory (``squeue``), so a restarted controller waits for
them instead of submitting the same work twice.

Times from SLURM are ISO 8601 local times as SLURM prints them; memory in MB;
time limits in minutes.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SUBMITTED_RE = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?\s*$")
REGISTRY = Path(".cryofac") / "slurm_submitted.tsv"
TABLE = "cluster_jobs.tsv"
#: sacct fields read for each job (``sacct -X -P``).
SACCT_FIELDS = (
    "JobID",
    "State",
    "Reason",
    "Partition",
    "Account",
    "AllocCPUS",
    "ReqMem",
    "Timelimit",
    "Elapsed",
    "NodeList",
    "AllocTRES",
    "Submit",
    "Start",
    "End",
    "ExitCode",
)
COLUMNS = (
    "slurm_jobid",
    "rule",
    "batch",
    "state",
    "reason",
    "partition",
    "account",
    "cpus",
    "mem",
    "gpus",
    "time_limit",
    "elapsed",
    "node",
    "submitted",
    "started",
    "ended",
    "exit_code",
    "targets",
    "log",
)
QUEUED = ("PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING")
RUNNING = ("RUNNING", "COMPLETING", "STOPPED", "SIGNALING", "STAGE_OUT")
FAILED = (
    "BOOT_FAIL",
    "CANCELLED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
)


#: Order of the rules in a batch's group job.
STEP_ORDER = ("motioncorr", "ctf", "pick", "extract", "reconstruct")


class SlurmError(RuntimeError):
    """A SLURM command could not be run or answered with an error (message says which)."""


@dataclass(frozen=True)
class Submission:
    """One ``sbatch`` by the executor plugin: SLURM job id, log path and the
    Snakemake jobs it runs (``rule:wildcards`` separated by spaces, from the job's
    ``--target-jobs``; empty when SLURM no longer had the job script)."""

    slurm_jobid: str
    log: str
    targets: str = ""

    @property
    def rule(self) -> str:
        """Rules the job runs (``motioncorr,ctf,pick,extract`` for a batch's group
        job), else the rule or group named in the plugin's log path."""
        rules = [t.split(":")[0] for t in self.targets.split()]
        if rules:
            order = {r: i for i, r in enumerate(STEP_ORDER)}
            return ",".join(sorted(dict.fromkeys(rules), key=lambda r: order.get(r, 99)))
        parts = Path(self.log).parts
        if "slurm_logs" in parts:
            rest = parts[parts.index("slurm_logs") + 1 :]
            if rest:
                return rest[0].removeprefix("group_").removeprefix("rule_")
        return ""

    @property
    def batch(self) -> str:
        """Batch of the job (``bNNNNN``) when its wildcards name one, else ''."""
        match = re.search(r"batch=(b\d{5})", self.targets) or re.search(r"/(b\d{5})/", self.log)
        return match.group(1) if match else ""


def parse_submissions(lines: Iterable[str]) -> list[Submission]:
    """The submissions announced in Snakemake's output, in order."""
    found = []
    for line in lines:
        match = SUBMITTED_RE.search(line)
        if match:
            found.append(Submission(match.group(1), match.group(2)))
    return found


def job_targets(slurm_jobid: str) -> str:
    """``rule:wildcards`` of the Snakemake jobs a SLURM job runs, from its batch
    script (``scontrol write batch_script``); '' when SLURM has forgotten it."""
    try:
        script = _run(["scontrol", "write", "batch_script", slurm_jobid, "-"])
    except SlurmError:
        return ""
    match = re.search(r"--target-jobs((?:\s+'[^']*')+)", script)
    return " ".join(re.findall(r"'([^']*)'", match.group(1))) if match else ""


def read_registry(out: str | os.PathLike) -> list[Submission]:
    """The submissions recorded for run folder ``out`` (oldest first)."""
    path = Path(out) / REGISTRY
    if not path.is_file():
        return []
    rows = csv.reader(path.read_text().splitlines(), delimiter="\t")
    return [
        Submission(r[0], r[1], r[2] if len(r) > 2 else "")
        for r in rows
        if len(r) >= 2 and r[0].isdigit()
    ]


def record_submissions(out: str | os.PathLike, lines: Iterable[str]) -> list[Submission]:
    """Append the submissions in ``lines`` not yet recorded (with the Snakemake jobs
    each runs, asked of SLURM once); return all recorded."""
    known = read_registry(out)
    seen = {s.slurm_jobid for s in known}
    new = [
        Submission(s.slurm_jobid, s.log, job_targets(s.slurm_jobid))
        for s in parse_submissions(lines)
        if s.slurm_jobid not in seen
    ]
    if new:
        path = Path(out) / REGISTRY
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            for s in new:
                fh.write(f"{s.slurm_jobid}\t{s.log}\t{s.targets}\n")
    return known + new


def _run(command: list[str], timeout_s: float = 60.0) -> str:
    if shutil.which(command[0]) is None:
        raise SlurmError(f"{command[0]}: not found on PATH")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(command[:2])}: no answer in {timeout_s:.0f} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SlurmError(f"{' '.join(command[:2])}: exit {result.returncode}: {last}")
    return result.stdout


def _gpus(tres: str) -> str:
    match = re.search(r"gres/gpu(?::[^=,]+)?=(\d+)", tres)
    return match.group(1) if match else "0"


def query_jobs(jobids: list[str]) -> dict[str, dict[str, str]]:
    """sacct's record of each job (allocation line only), keyed by job id."""
    if not jobids:
        return {}
    text = _run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(jobids), "--format", ",".join(SACCT_FIELDS)]
    )
    records = {}
    for row in csv.reader(io.StringIO(text), delimiter="|"):
        if len(row) != len(SACCT_FIELDS):
            continue
        record = dict(zip(SACCT_FIELDS, row, strict=True))
        records[record["JobID"]] = record
    return records


def job_table(out: str | os.PathLike) -> list[dict[str, str]]:
    """One row per recorded job of ``out`` (see :data:`COLUMNS`), states from sacct.

    Raises :class:`SlurmError` when sacct cannot answer.
    """
    submissions = read_registry(out)
    records = query_jobs([s.slurm_jobid for s in submissions])
    rows = []
    for s in submissions:
        r = records.get(s.slurm_jobid, {})
        state = r.get("State", "").split(" ")[0] or "SUBMITTED"  # "CANCELLED by 0"
        reason = r.get("Reason", "")
        rows.append(
            {
                "slurm_jobid": s.slurm_jobid,
                "rule": s.rule,
                "batch": s.batch,
                "state": state,
                "reason": "" if reason == "None" else reason,
                "partition": r.get("Partition", ""),
                "account": r.get("Account", ""),
                "cpus": r.get("AllocCPUS", ""),
                "mem": r.get("ReqMem", ""),
                "gpus": _gpus(r.get("AllocTRES", "")),
                "time_limit": r.get("Timelimit", ""),
                "elapsed": r.get("Elapsed", ""),
                "node": "" if r.get("NodeList") in (None, "None assigned") else r["NodeList"],
                "submitted": r.get("Submit", ""),
                "started": "" if r.get("Start") == "Unknown" else r.get("Start", ""),
                "ended": "" if r.get("End") == "Unknown" else r.get("End", ""),
                "exit_code": r.get("ExitCode", ""),
                "targets": s.targets,
                "log": s.log,
            }
        )
    return rows


def write_job_table(out: str | os.PathLike) -> list[dict[str, str]]:
    """Write ``OUT/cluster_jobs.tsv`` (atomically) and return its rows."""
    from workflows.tables import atomic_write_text, format_tsv

    rows = job_table(out)
    atomic_write_text(Path(out) / TABLE, format_tsv(rows, COLUMNS))
    return rows


def update(out: str | os.PathLike, lines: Iterable[str]) -> list[dict[str, str]]:
    """Record new submissions from Snakemake's output and rewrite the job table."""
    record_submissions(out, lines)
    if not read_registry(out):
        return []
    return write_job_table(out)


def cluster_section(out: str | os.PathLike) -> dict | None:
    """``summary.json``'s ``cluster`` entry from ``OUT/cluster_jobs.tsv`` (None without one).

    Counts of jobs queued, running, done and failed; per batch its latest job's
    state and node; every failed job with SLURM's state and reason.
    """
    from workflows.tables import read_tsv

    path = Path(out) / TABLE
    if not path.is_file():
        return None
    rows = read_tsv(path)
    counts = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    latest: dict[str, dict[str, str]] = {}
    failures = []
    for row in rows:
        state = row["state"]
        if state in QUEUED or state == "SUBMITTED":
            counts["queued"] += 1
        elif state in RUNNING:
            counts["running"] += 1
        elif state == "COMPLETED":
            counts["done"] += 1
        elif state in FAILED:
            counts["failed"] += 1
            failures.append(
                {
                    k: row[k]
                    for k in ("slurm_jobid", "rule", "batch", "state", "reason", "time_limit")
                }
            )
        key = row["batch"] or row["rule"]
        latest[key] = row
    return {
        "scheduler": "slurm",
        "jobs": counts,
        "batches": {
            key: {"state": r["state"], "node": r["node"], "slurm_jobid": r["slurm_jobid"]}
            for key, r in sorted(latest.items())
        },
        "failures": failures,
        "table": TABLE,
    }


def active_jobs(out: str | os.PathLike) -> list[tuple[str, str]]:
    """(job id, state) of this user's queued or running jobs whose working directory
    is ``out`` (``squeue``), e.g. left by a controller that was killed."""
    text = _run(["squeue", "-h", "-u", _user(), "-o", "%i|%T|%Z"])
    target = os.path.realpath(out)
    jobs = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and os.path.realpath(parts[2]) == target:
            jobs.append((parts[0], parts[1]))
    return jobs


def _user() -> str:
    import getpass

    return getpass.getuser()


def is_slurm_profile(profile: str | os.PathLike) -> bool:
    """Whether the Snakemake profile folder uses the SLURM executor."""
    import yaml

    try:
        settings = yaml.safe_load((Path(profile) / "config.yaml").read_text()) or {}
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and settings.get("executor") == "slurm"

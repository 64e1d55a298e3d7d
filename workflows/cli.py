"""``cryofac process``: run the Snakemake workflow on an acquisition folder.

Snakemake runs as a child process (``python -m snakemake``) in the run folder, so
its locking, incomplete-job tracking and logs are the standard ones. SIGTERM and
SIGINT are passed on to it, so a killed run leaves no half-written output that a
rerun would trust (``--rerun-incomplete``). Errors come back as one line naming
the failed rule and its log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from cryofac.errors import CryofacError
from workflows import control, slurm_jobs

WORKFLOW_DIR = Path(__file__).resolve().parent
SNAKEFILE = WORKFLOW_DIR / "Snakefile"
DEFAULT_CONFIG = WORKFLOW_DIR / "config" / "config.yaml"
SCHEMA = WORKFLOW_DIR / "schemas" / "config.schema.yaml"
PROFILES = WORKFLOW_DIR / "profiles"
PIPELINE_SECTIONS = ("acquisition", "motioncorr", "ctf", "picking", "extraction", "reconstruct")
STATE_DIR = ".cryofac"
#: Workflow configuration shipped inside a profile folder (resources for that executor).
PROFILE_CONFIG = "cryofac.yaml"


class WorkflowFailed(CryofacError):
    """The Snakemake workflow stopped with an error (message names rule and log)."""


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base``, dictionaries key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike | None,
    overrides: dict | None = None,
    profile_config: str | os.PathLike | None = None,
) -> dict:
    """Defaults merged with the profile's ``cryofac.yaml`` (``profile_config``), the
    user's file and ``overrides``, in that order; validated.

    Raises :class:`cryofac.errors.ConfigError` naming the file and key.
    """
    import jsonschema

    from cryofac.config import ConfigError, load_pipeline, read_yaml

    config = read_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG)
    for layer in (profile_config, path):
        if layer is None:
            continue
        user = read_yaml(layer)
        source = str(layer)
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise ConfigError(source, "", "must be a mapping of keys to values")
        config = deep_merge(config, user)
    config = deep_merge(config, overrides or {})
    schema = read_yaml(SCHEMA)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(config),
        key=lambda e: len(e.absolute_path),
        reverse=True,
    )
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path)
        raise ConfigError(source, key, error.message)
    overrides_pipeline = {k: config[k] for k in PIPELINE_SECTIONS if k in config}
    load_pipeline(overrides=overrides_pipeline)  # raises ConfigError on bad values
    return config


def profile_dir(profile: str) -> Path:
    """``local``/``slurm`` (shipped) or a folder holding a Snakemake ``config.yaml``."""
    shipped = PROFILES / profile
    path = shipped if shipped.is_dir() else Path(profile)
    if not (path / "config.yaml").is_file():
        names = ", ".join(sorted(p.name for p in PROFILES.iterdir() if p.is_dir()))
        raise click.BadParameter(
            f"{profile}: not a shipped profile ({names}) nor a folder with config.yaml",
            param_hint="--profile",
        )
    return path.resolve()


def profile_config(profile: Path) -> Path | None:
    """The profile's workflow configuration (``PROFILE/cryofac.yaml``), if it has one."""
    path = profile / PROFILE_CONFIG
    return path if path.is_file() else None


def cryofac_executable() -> str:
    """The ``cryofac`` script of this Python environment (falls back to PATH)."""
    candidate = Path(sys.executable).with_name("cryofac")
    return str(candidate) if candidate.exists() else "cryofac"


#: what makes Snakemake rerun a finished job (also in profiles/*/config.yaml)
RERUN_TRIGGERS = ("mtime", "params", "input")


def snakemake_command(
    raw_dir: Path,
    out: Path,
    config_files: list[Path],
    profile: Path,
    cores: int | None,
    dry_run: bool,
    unlock: bool = False,
    forcerun: list[str] | None = None,
    reconstruction: str | None = None,
) -> list[str]:
    """The ``python -m snakemake ...`` command line for one invocation.

    A preprocessing pass (``reconstruct_mode=skip``) unless ``reconstruction`` names
    the ``reconstruct/p<N>/result.json`` to make: then only the snapshot and
    reconstruction rules may run (workflows.background), beside a preprocessing pass.
    """
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(out),
        "--profile",
        str(profile),
        "--configfile",
        *[str(p) for p in config_files],
        "--config",
        f"raw_dir={raw_dir}",
        f"reconstruct_mode={'only' if reconstruction else 'skip'}",
        "--rerun-incomplete",
        # reruns follow inputs, parameters and the steps' versions (rules/common.smk),
        # not the mtime of workflow scripts: an update of cryofac never redoes batches
        *("--rerun-triggers", *RERUN_TRIGGERS),
        "--keep-going",
        "--nocolor",
    ]
    if cores is not None:
        command += ["--cores", str(cores)]
    if dry_run:
        command += ["--dry-run", "--quiet", "rules"]
    if unlock:
        command += ["--unlock"]
    if reconstruction:
        command += ["--nolock", "--allowed-rules", "particle_snapshot", "reconstruct"]
        command += ["--", reconstruction]
    elif forcerun:
        command += ["--forcerun", *forcerun]
    return command


_ERROR_RULE = re.compile(r"^Error in rule (\S+):")
_WILDCARDS = re.compile(r"^\s+wildcards: (.+)$")
_LOG = re.compile(r"^\s+log: (\S+)")
_STEPS = re.compile(r"(\d+) of (\d+) steps")


def explain_failure(output: str, out: Path) -> str:
    """One line from Snakemake's output: the first failed rule, its wildcards and log."""
    from workflows.summary import latest_log

    lines = output.splitlines()
    snakemake_log = latest_log(out)
    where = f"Snakemake log: {out / snakemake_log}" if snakemake_log else f"see {out}"
    for i, line in enumerate(lines):
        match = _ERROR_RULE.match(line)
        if not match:
            continue
        rule, wildcards, log = match.group(1), "", ""
        for following in lines[i + 1 : i + 15]:
            if (m := _WILDCARDS.match(following)) and not wildcards:
                wildcards = f" ({m.group(1)})"
            if (m := _LOG.match(following)) and not log:
                log = m.group(1)
            if following.strip().startswith("output:") and not wildcards:
                if m := re.search(r"batches/(b\d{5})/", following):
                    wildcards = f" (batch={m.group(1)})"
                elif m := re.search(r"reconstruct/p0*(\d+)/", following):
                    wildcards = f" ({m.group(1)} particles)"
        failed = sum(1 for x in lines if _ERROR_RULE.match(x))
        more = f" and {failed - 1} more job(s)" if failed > 1 else ""
        log_text = ""
        if log and (out / log).is_file():
            last = [x.strip() for x in (out / log).read_text().splitlines() if x.strip()]
            log_text = f"; job log: {out / log}" + (f" ({last[-1][:200]})" if last else "")
        return f"workflow failed in rule {rule}{wildcards}{more}{log_text}; {where}"
    if "LockException" in output or "Directory cannot be locked" in output:
        return (
            f"{out} is locked by another Snakemake run; if none is running (a previous "
            "one was killed), run again with --unlock"
        )
    for line in lines:
        if re.match(r"^\w*(Error|Exception)\b", line) or "Error:" in line.split(" ")[0]:
            return f"workflow failed: {line.strip()}; {where}"
    tail = next((x.strip() for x in reversed(lines) if x.strip()), "no output")
    return f"workflow failed: {tail}; {where}"


class Run:
    """One Snakemake invocation: output to a log file, signals forwarded, progress shown."""

    def __init__(
        self,
        command: list[str],
        log_path: Path,
        show_progress: bool,
        run_lock: control.RunLock | None = None,
        echo_progress: bool = False,
    ):
        self.command = command
        self.log_path = log_path
        self.show_progress = show_progress
        #: without a terminal: one plain line per progress step and per failed job
        self.echo_progress = echo_progress
        self.run_lock = run_lock
        self.output: list[str] = []
        self.terminated_by: int | None = None
        self.terminated_at: float | None = None
        #: seconds Snakemake gets to stop its jobs after SIGTERM before SIGKILL
        self.grace_s = 10.0

    def _pump(self, stream, bar) -> None:
        with open(self.log_path, "a") as log:
            for line in stream:
                log.write(line)
                log.flush()
                self.output.append(line.rstrip("\n"))
                match = _STEPS.search(line)
                if bar is not None and match:
                    bar.total = int(match.group(2))
                    bar.n = int(match.group(1))
                    bar.refresh()
                elif self.echo_progress and (match or _ERROR_RULE.match(line)):
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{stamp} {line.strip()}", file=sys.stderr, flush=True)

    def __call__(self, refresh=None, refresh_s: float = 10.0) -> int:
        from tqdm import tqdm

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        bar = None
        if self.show_progress:
            bar = tqdm(total=0, unit="job", desc="cryofac process", file=sys.stderr)
        # Snakemake and its jobs get their own process group: a signal to us is passed
        # to the whole group, so running jobs stop at once, Snakemake removes their
        # partial outputs and its lock, and a rerun redoes exactly those jobs.
        # It also inherits the run folder's locks (workflows.control), and dies with us.
        env = dict(os.environ)
        if self.run_lock is not None:
            env[control.JOBS_LOCK_ENV] = self.run_lock.jobs_path
        child = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
            pass_fds=self.run_lock.fds if self.run_lock is not None else (),
            preexec_fn=control.die_with_this_process(),
            env=env,
        )

        def kill_group(sig: int) -> None:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig)

        def forward(signum, _frame):
            # a second signal, or Snakemake not gone after the grace period: SIGKILL.
            # Its lock is then removed by the next run, and --rerun-incomplete redoes
            # the jobs that were running.
            again = self.terminated_at is not None
            self.terminated_by = signum
            if not again:
                self.terminated_at = time.monotonic()
            kill_group(signal.SIGKILL if again else signal.SIGTERM)

        handled = [signal.SIGTERM, signal.SIGINT]
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, forward) for s in handled}
        pump = threading.Thread(target=self._pump, args=(child.stdout, bar), daemon=True)
        pump.start()
        try:
            while True:
                stopping = self.terminated_at is not None
                try:
                    child.wait(timeout=1.0 if stopping else refresh_s)
                    break
                except subprocess.TimeoutExpired:
                    if stopping and time.monotonic() - self.terminated_at > self.grace_s:
                        kill_group(signal.SIGKILL)
                    elif refresh is not None and not stopping:
                        refresh()
        finally:
            pump.join(timeout=30)
            for s, handler in previous.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
        return child.returncode


ACQUISITION_KEYS = (
    "pixel_size_A",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "dose_per_frame_e_A2",
)


def acquisition_metadata(raw_dir: Path) -> dict[str, float]:
    """Pixel size (Å), dose per frame (e/Å²), kV, Cs (mm), amplitude contrast from
    ``RAW_DIR/acquisition.json`` when the microscope software wrote one.

    They override the facility defaults; a ``--config`` file overrides them.
    """
    import json

    path = raw_dir / "acquisition.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WorkflowFailed(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        return {}
    values = {k: data[k] for k in ACQUISITION_KEYS if isinstance(data.get(k), int | float)}
    if "voltage_kV" in values:
        values["voltage_kV"] = int(values["voltage_kV"])
    return values


def _parse_until(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time", param_hint="--until"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Re-running continues where the last run stopped; see workflows/README.md.",
)
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (created; holds batches/, particles/, reconstruct/, summary.json).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML overriding workflows/config/config.yaml and config/pipeline.yaml sections.",
)
@click.option(
    "--profile",
    default="local",
    show_default=True,
    help="Snakemake profile: local, slurm, or a folder with config.yaml.",
)
@click.option("--cores", type=click.IntRange(min=1), help="CPU cores to use [profile's].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Movies per batch job.")
@click.option(
    "--quiet-period",
    type=click.FloatRange(min=0),
    help="Ignore movies modified less than this many seconds ago.",
)
@click.option(
    "--flush",
    is_flag=True,
    help="The acquisition is over: run the last incomplete batch and a final reconstruction.",
)
@click.option("--dry-run", "-n", is_flag=True, help="Only show which jobs would run.")
@click.option("--watch", is_flag=True, help="Keep re-running as movies land until stopped.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="With --watch: seconds between runs.",
)
@click.option("--until", help="With --watch: stop at this ISO 8601 time (then flush).")
@click.option(
    "--stop-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --watch: stop (then flush) when this file appears [OUT/STOP].",
)
@click.option("--unlock", is_flag=True, help="Remove a stale lock left by a killed run first.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Run again every batch that has a failed movie (after fixing what made it fail).",
)
@click.option(
    "--ignore-metadata-mismatch",
    is_flag=True,
    help="Process with the configured pixel size, dose and voltage even where the "
    "movies' headers or acquisition.json differ by more than 1 %.",
)
@click.option(
    "--allow-failed-movies",
    is_flag=True,
    help="Exit 0 when the run finished but some movies failed (default: exit 3).",
)
def process(
    raw_dir: Path,
    out: Path,
    config_file: Path | None,
    profile: str,
    cores: int | None,
    batch_size: int | None,
    quiet_period: float | None,
    flush: bool,
    dry_run: bool,
    watch: bool,
    interval: float,
    until: str | None,
    stop_file: Path | None,
    unlock: bool,
    retry_failed: bool,
    ignore_metadata_mismatch: bool,
    allow_failed_movies: bool,
) -> None:
    """Process the acquisition in RAW_DIR with the Snakemake workflow, into --out.

    Movies are grouped into fixed batches (motion correction, CTF, picking,
    extraction); particles are gathered and reconstructed once there are enough,
    and again as they grow, beside the preprocessing of new movies (which never
    waits for a reconstruction). Progress: OUT/summary.json and OUT/movies.tsv;
    without a terminal, progress and failures are printed as lines.

    Exit status: 0 when everything ran, 1 on an error (one line), 3 when the run
    finished but some movies failed (their reasons are in OUT/movies.tsv; use
    --allow-failed-movies for 0, --retry-failed to run their batches again).
    """
    import yaml

    from workflows import background, idle, metadata

    raw_dir = raw_dir.resolve()
    out = out.resolve()
    overrides: dict[str, Any] = {}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if quiet_period is not None:
        overrides["movies"] = {"quiet_period_s": quiet_period}
    user = {}
    if config_file is not None:
        from cryofac.config import read_yaml

        user = read_yaml(config_file) or {}
    if "cryofac" not in user:
        overrides["cryofac"] = cryofac_executable()
    measured = acquisition_metadata(raw_dir)
    given = user.get("acquisition") or {}
    if measured and any(k not in given for k in measured):
        overrides["acquisition"] = {k: v for k, v in measured.items() if k not in given}
    profile_path = profile_dir(profile)
    profile_file = profile_config(profile_path)
    config = load_config(config_file, overrides, profile_file)
    until_ts = _parse_until(until)

    state = out / STATE_DIR
    overrides_text = yaml.safe_dump(overrides, sort_keys=True)
    try:
        state.mkdir(parents=True, exist_ok=True)
        overrides_file = state / "overrides.yaml"
        if not overrides_file.exists() or overrides_file.read_text() != overrides_text:
            overrides_file.write_text(overrides_text)
    except OSError as exc:
        raise WorkflowFailed(
            f"{out}: cannot write the run folder ({exc.strerror or exc}); choose another --out"
        ) from None
    config_files = (
        ([profile_file] if profile_file else [])
        + ([config_file.resolve()] if config_file else [])
        + [overrides_file]
    )
    stop_file = (stop_file or out / "STOP").resolve()
    check_metadata = bool(config.get("check_metadata", True)) and not ignore_metadata_mismatch
    acquisition = _acquisition_config(config)
    pass_print = idle.fingerprint(config)

    run_lock = None if dry_run else control.acquire(state)
    recon = background.Reconstruction(state / "reconstruct.out", run_lock)
    echo = not sys.stderr.isatty()
    slurm = slurm_jobs.is_slurm_profile(profile_path)

    def check_movies(final: bool):
        scan = scan_raw(raw_dir, config["movies"])
        metadata.refuse_eer(raw_dir, scan.eligible)
        if check_metadata:
            from workflows import batching

            assigned = {m for ms in batching.read_manifests(out).values() for m in ms}
            new = [m for m in scan.eligible if m not in assigned]
            metadata.refuse_mismatch(acquisition, raw_dir, new)
        return scan

    def files_for(final: bool) -> list[Path]:
        files = list(config_files)
        if final:
            flush_file = state / "flush.yaml"
            if not flush_file.exists():
                flush_file.write_text("flush: true\n")
            files.append(flush_file)
        return files

    def reconstruct(final: bool, block: bool) -> None:
        """Start the reconstruction due now (if none runs); ``block``: wait for it."""
        if dry_run:
            return
        if recon.running():
            if not block:
                return
            _wait_reconstruction(recon)
            report_reconstruction(recon.finished(), block)
        target = background.due_target(out, config, final)
        if target is None:
            return
        command = snakemake_command(
            raw_dir,
            out,
            files_for(final),
            profile_path,
            cores,
            False,
            reconstruction=target,
        )
        if echo:
            click.echo(f"{time.strftime('%H:%M:%S')} reconstruction started: {target}", err=True)
        recon.start(command, target, nice=not block, request=background.request(config))
        if block:
            _wait_reconstruction(recon)
            report_reconstruction(recon.finished(), block, target)

    def report_reconstruction(code: int | None, block: bool, target: str | None = None) -> None:
        if code is None:
            return
        if slurm:  # its SLURM jobs join the run's job table (cluster_jobs.tsv, summary)
            with contextlib.suppress(OSError, ValueError, slurm_jobs.SlurmError):
                slurm_jobs.update(out, recon.log_path.read_text().splitlines())
        where = target or recon.target or "reconstruct"
        if code != 0:
            message = (
                f"reconstruction {where} failed (exit {code}); "
                f"job log: {out / 'logs' / 'reconstruct'}, Snakemake output: {recon.log_path}"
            )
            if block:
                raise WorkflowFailed(message)
            click.echo(f"Error: {message}", err=True)
        else:
            background.record_request(out, where, recon.request)
            if echo:
                now = time.strftime("%H:%M:%S")
                click.echo(f"{now} reconstruction finished: {where}", err=True)

    retry = {"pending": retry_failed}

    def invoke(final: bool, block_reconstruction: bool) -> None:
        scan = check_movies(final)
        ended = recon.finished()
        report_reconstruction(ended, False)
        # --retry-failed: the first pass reruns the batches with a failed movie, once
        forcerun = failed_batch_targets(out) if retry["pending"] else []
        retry["pending"] = False
        if (
            watch
            and not final
            and not dry_run
            and not unlock
            and not forcerun
            and idle.is_idle(out, state, scan, config, reconstruction_running=recon.running())
        ):
            now = "running" if recon.running() else "idle"
            _refresh_if_changed(out, raw_dir, scan, now, force=ended is not None)
            return
        files = files_for(final)
        stale = not dry_run and any((out / ".snakemake" / "locks").glob("*.lock"))
        if unlock or stale:
            # control.acquire proved that no process of an earlier run is alive (they
            # hold jobs.lock), so a Snakemake lock left behind is stale
            Run(
                snakemake_command(raw_dir, out, files, profile_path, cores, False, unlock=True),
                state / "snakemake.out",
                False,
                run_lock,
            )()
        idle.forget_pass(state)
        if slurm and not dry_run:
            wait_for_previous_jobs(raw_dir, out, config)
        run_once(
            snakemake_command(raw_dir, out, files, profile_path, cores, dry_run, forcerun=forcerun),
            (raw_dir, out),
            profile_path,
            dry_run,
            config,
            final,
            run_lock=run_lock,
            reconstruction_running=recon.running,
        )
        reconstruct(final, block=block_reconstruction)
        if not dry_run:
            idle.record_pass(state, pass_print)
            _refresh_if_changed(
                out, raw_dir, scan_raw(raw_dir, config["movies"]), final_state(final), force=True
            )

    def final_state(final: bool) -> str:
        if recon.running():
            return "running"
        return "complete" if final and not scan_raw(raw_dir, config["movies"]).recent else "idle"

    try:
        if not watch:
            invoke(flush, block_reconstruction=True)
            _exit_for_failed_movies(out, dry_run or allow_failed_movies)
            return

        click.echo(f"Watching {raw_dir}; stop with Ctrl-C or by creating {stop_file}", err=True)
        stopped = {"signal": None}

        def stop(signum, _frame):
            stopped["signal"] = signum

        while True:
            invoke(final=False, block_reconstruction=False)
            deadline = time.time() + interval
            previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                while time.time() < deadline and stopped["signal"] is None:
                    if stop_file.exists() or (until_ts is not None and time.time() >= until_ts):
                        break
                    time.sleep(min(1.0, max(0.0, deadline - time.time())))
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            if stopped["signal"] is not None:
                recon.stop()
                click.echo("Stopped; run again to continue.", err=True)
                return
            if stop_file.exists() or (until_ts is not None and time.time() >= until_ts):
                click.echo("Acquisition over: processing the remaining movies.", err=True)
                wait_until_quiet(raw_dir, config["movies"])
                # the last movies first (beside a running reconstruction, like every
                # pass); invoke then waits for that reconstruction and runs the final one
                invoke(final=True, block_reconstruction=True)
                _exit_for_failed_movies(out, allow_failed_movies)
                return
    finally:
        recon.stop()


def _acquisition_config(config: dict) -> dict[str, float]:
    """The acquisition section the steps will run with (facility defaults + overrides)."""
    from cryofac.config import load_pipeline

    sections = {k: config[k] for k in PIPELINE_SECTIONS if k in config}
    return dict(load_pipeline(overrides=sections)["acquisition"])


def _wait_reconstruction(recon) -> None:
    """Wait for the running reconstruction; SIGTERM/SIGINT stop it (and then us)."""
    stopped: dict[str, int | None] = {"signal": None}

    def stop(signum, _frame):
        stopped["signal"] = signum

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while recon.running() and stopped["signal"] is None:
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped["signal"] is not None:
        recon.stop()
        raise WorkflowFailed(
            f"stopped by signal {signal.Signals(stopped['signal']).name}; "
            "run the same command again to continue"
        )


def failed_batch_targets(out: Path) -> list[str]:
    """Motion-correction outputs of every batch with a failed movie (for --forcerun)."""
    from workflows import batching
    from workflows.tables import read_tsv

    targets = []
    for batch in batching.read_manifests(out):
        rows = read_tsv(out / batching.BATCHES_DIR / batch / "movies.tsv")
        if any(r.get("status") == "failed" for r in rows):
            targets.append(f"{batching.BATCHES_DIR}/{batch}/motioncorr/status.tsv")
    return targets


class MoviesFailed(click.ClickException):
    """The run finished, but some movies failed (exit status 3)."""

    exit_code = 3


def _exit_for_failed_movies(out: Path, allowed: bool) -> None:
    """Exit 3 with one line when movies failed (unless ``allowed``)."""
    from workflows.tables import read_tsv

    rows = read_tsv(out / "movies.tsv")
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        first = failed[0]
        message = (
            f"{len(failed)} of {len(rows)} movies failed (first: {first['movie']}: "
            f"{first.get('reason') or 'see its batch log'}); reasons in {out / 'movies.tsv'}"
        )
        if allowed:
            click.echo(f"Warning: {message}", err=True)
            return
        raise MoviesFailed(message)


def _refresh_if_changed(out: Path, raw_dir: Path, scan, state: str, force: bool = False) -> None:
    """Rewrite the summary when its state or movie count changed (or ``force``)."""
    import json

    from workflows import summary

    try:
        current = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        current = None
    if current is not None and not force:
        seen = len(scan.eligible) + len(scan.recent)
        if current.get("state") == state and current.get("movies_seen") == seen:
            return
    with contextlib.suppress(OSError, ValueError):
        summary.write_summary(out, raw_dir, state, scan)


def scan_raw(raw_dir: Path, movies: dict):
    """The raw-data folder as the workflow sees it, with the ``movies`` config section."""
    from workflows import batching

    return batching.scan_movies(
        raw_dir, movies["patterns"], movies["exclude"], movies["quiet_period_s"]
    )


def wait_until_quiet(raw_dir: Path, movies: dict, limit_s: float = 600.0) -> list[str]:
    """Wait until no movie is inside its quiet period; returns those still inside it.

    The final pass skips a movie written in the last ``quiet_period_s`` seconds (it may
    still be growing), so when the acquisition is declared over just after its last
    movie landed, that movie would be left out. Waits at most the quiet period plus
    ``limit_s`` seconds (a file still changing then is left for the next run).
    """
    quiet = float(movies["quiet_period_s"])
    deadline = time.time() + quiet + limit_s
    while True:
        scan = scan_raw(raw_dir, movies)
        if not scan.recent or time.time() >= deadline:
            return scan.recent
        time.sleep(min(1.0, max(0.05, quiet / 4)))


def wait_for_previous_jobs(
    raw_dir: Path, out: Path, config: dict, poll_s: float = 5.0
) -> list[str]:
    """Wait until no SLURM job of ``out`` is queued or running; return the ids waited for.

    A controller that was killed (SIGKILL, a lost login session) leaves its jobs in
    SLURM's queue; Snakemake's next run would submit their work again. Their
    submissions are recorded from the previous run's output first, so they appear in
    ``cluster_jobs.tsv``; when they end, their outputs are complete and the next run
    does not redo them. SLURM commands that fail are reported and not waited on.
    """
    from workflows import summary

    for name in ("snakemake.out", "reconstruct.out"):  # preprocessing, reconstruction
        with contextlib.suppress(OSError):
            previous = (out / STATE_DIR / name).read_text().splitlines()
            slurm_jobs.record_submissions(out, previous)
    waited: list[str] = []
    while True:
        try:
            active = slurm_jobs.active_jobs(out)
        except slurm_jobs.SlurmError as exc:
            click.echo(f"cannot list SLURM jobs of {out}: {exc}", err=True)
            return waited
        if not active:
            if waited:  # their final states (COMPLETED, FAILED, ...) into the job table
                with contextlib.suppress(OSError, ValueError, slurm_jobs.SlurmError):
                    slurm_jobs.update(out, [])
            return waited
        ids = [jobid for jobid, _ in active]
        if not waited:
            click.echo(
                f"waiting for {len(ids)} SLURM job(s) of a previous run: {', '.join(ids)}",
                err=True,
            )
        waited = sorted(set(waited) | set(ids))
        with contextlib.suppress(OSError, ValueError, slurm_jobs.SlurmError):
            slurm_jobs.update(out, [])
            summary.write_summary(out, raw_dir, "running", scan_raw(raw_dir, config["movies"]))
        time.sleep(poll_s)


def run_once(
    command: list[str],
    folders: tuple[Path, Path],
    profile: Path,
    dry_run: bool,
    config: dict,
    final: bool,
    run_lock: control.RunLock | None = None,
    reconstruction_running=lambda: False,
) -> None:
    """One preprocessing Snakemake pass (``command``: :func:`snakemake_command`) on
    ``folders`` = (raw folder, run folder); raises :class:`WorkflowFailed` with one line."""
    from workflows import summary

    raw_dir, out = folders
    log_path = out / STATE_DIR / "snakemake.out"
    if not dry_run:
        log_path.write_text("")
    interactive = sys.stderr.isatty()
    run = Run(
        command,
        log_path if not dry_run else out / STATE_DIR / "dry-run.out",
        show_progress=interactive and not dry_run,
        run_lock=run_lock,
        echo_progress=not interactive and not dry_run,
    )

    def scan():
        return scan_raw(raw_dir, config["movies"])

    slurm = slurm_jobs.is_slurm_profile(profile) and not dry_run

    def record_jobs() -> None:
        if slurm:  # SLURM jobs: submissions, states, nodes, reasons (cluster_jobs.tsv)
            with contextlib.suppress(OSError, ValueError, slurm_jobs.SlurmError):
                slurm_jobs.update(out, list(run.output))

    def refresh() -> None:
        record_jobs()
        with contextlib.suppress(OSError, ValueError):  # retried at the next refresh
            summary.write_summary(out, raw_dir, "running", scan())

    code = run(refresh=None if dry_run else refresh)
    record_jobs()
    output = "\n".join(run.output)
    if dry_run:
        if code != 0:
            raise WorkflowFailed(explain_failure(output, out))
        click.echo(_job_table(output))
        return
    if run.terminated_by is not None:
        summary.write_summary(out, raw_dir, "idle", scan())
        raise WorkflowFailed(
            f"stopped by signal {signal.Signals(run.terminated_by).name}; "
            "run the same command again to continue"
        )
    if code != 0:
        with contextlib.suppress(OSError, ValueError):
            summary.write_summary(out, raw_dir, "failed", scan())
        raise WorkflowFailed(explain_failure(output, out))
    # the state until the controller's final word (a reconstruction may follow, or run)
    latest = scan()
    state = "running" if final or reconstruction_running() else "idle"
    written = summary.write_summary(out, raw_dir, state, latest)
    if not interactive:
        click.echo(
            f"{time.strftime('%H:%M:%S')} pass done: {written['movies_processed']} movies "
            f"processed, {written['movies_failed']} failed, {written['particles']} particles",
            err=True,
        )


def _job_table(output: str) -> str:
    """The ``Job stats`` table of a dry run (or 'Nothing to be done')."""
    lines = output.splitlines()
    if any("Nothing to be done" in x for x in lines):
        return "Nothing to be done: every output is up to date."
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            table = []
            for row in lines[i + 1 :]:
                if not row.strip():
                    break
                table.append(row)
            return "\n".join(["Jobs to run:", *table])
    return "\n".join(x for x in lines if x.strip())

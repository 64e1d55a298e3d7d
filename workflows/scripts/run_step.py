"""Run one ``cryofac`` step on a batch and record which inputs succeeded.

Usage (from a rule's shell command)::

    python run_step.py --inputs LIST --out DIR --status STATUS.tsv --ok OK.txt \
        [--input-dir RAW] [--products SUFFIX | --star STAR --column COL] \
        [--max-fit-resolution Å] [--selected SELECTED.star] -- cryofac STEP [OPTIONS]

The step is run as ``CMD... INPUT... --out DIR``. Steps process every input and
exit 1 with ``N of M inputs failed`` when some were bad (CONTRACT.md); that is
not a failure of the batch: the bad inputs are recorded as ``failed`` in
STATUS.tsv (with the step's message) and the rest go on. Any other non-zero
exit (a crash, a usage error) fails the job, and Snakemake reports it with the
log. STATUS.tsv and OK.txt are written last, atomically, so they exist only
when the step finished.

With ``--inputs`` empty (every movie of the batch failed earlier) the step is not
run and empty results are written.
"""

import argparse
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryofac.fileio import atomic_path
from cryofac.fileio import atomic_write as _atomic_write
from workflows import control
from workflows.batching import stem as _stem

PARTIAL_FAILURE = "inputs failed"
#: errno values that say the machine, not the movie, is at fault: retried, never a
#: failed movie (disk full, quota, I/O error, permission, stale NFS handle, no memory)
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.ESTALE, errno.ENOMEM}
)
_ERRNO = re.compile(r"\[Errno (\d+)\]")
#: file beside the step's folder that says the step waits on a transient error
WAITING = "waiting.json"


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (cryofac.fileio), mode from the umask."""
    _atomic_write(path, text)


def is_transient(message: str) -> bool:
    """Whether a step's error message is an OS error the machine may recover from."""
    match = _ERRNO.search(message)
    return bool(match) and int(match.group(1)) in TRANSIENT_ERRNOS


def clear_folder(out: str | os.PathLike) -> None:
    """Remove everything in ``out`` (the step's own folder) so no old product survives."""
    out = Path(out)
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def run(command: list[str], log_path: str) -> tuple[int, str]:
    """Run ``command`` with output to the log; SIGTERM/SIGINT are passed on to it."""
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=control.die_with_this_process(),  # a killed job leaves no step behind
        )

        def forward(signum, _frame):
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            _, stderr = child.communicate()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        log.write(stderr)
    if child.returncode < 0:  # killed by a signal: die the same way so the job is incomplete
        os.kill(os.getpid(), -child.returncode)
    return child.returncode, stderr


def error_messages(stderr: str, inputs: list[str]) -> dict[str, str]:
    """Map each input (by stem) to the step's ``Error: NAME: message`` line about it."""
    by_stem = {_stem(i): i for i in inputs}
    messages: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.startswith("Error: "):
            continue
        body = line[len("Error: ") :]
        head, sep, rest = body.partition(": ")
        if sep and _stem(head) in by_stem:
            messages[by_stem[_stem(head)]] = rest.strip()
    return messages


def star_rows(path: str, column: str) -> dict[str, dict]:
    """Rows of a STAR file keyed by the stem of ``column``."""
    import starfile

    if not os.path.exists(path):
        return {}
    _key, table = star_block(starfile.read(path, always_dict=True), column)
    return {_stem(str(row[column])): row for row in table.to_dict("records")}


def star_block(data: dict, column: str):
    """The (name, table) of the first STAR block that has ``column``."""
    for key, table in data.items():
        if hasattr(table, "columns") and column in table.columns:
            return key, table
    raise ValueError(f"no data block with column {column}")


def run_step(
    command: list[str],
    inputs_file: str,
    out: str,
    status: str,
    ok: str,
    log: str,
    input_dir: str = "",
    products: str | None = None,
    star: str | None = None,
    column: str = "rlnMicrographName",
    max_fit_resolution: float | None = None,
    selected: str | None = None,
    single: bool = False,
    retry_wait_s: float = 30.0,
    retry_limit_s: float = 1800.0,
) -> int:
    """Run the step on the inputs listed in ``inputs_file``; 0 unless the step crashed.

    The step's folder ``out`` is emptied first, so a movie is ``ok`` only for what this
    run produced. When an input fails with a transient OS error (disk full, I/O error,
    permission: :data:`TRANSIENT_ERRNOS`) the step waits ``retry_wait_s`` seconds
    (doubling, at most 5 min) and runs again, with ``OUT/waiting.json`` saying why;
    after ``retry_limit_s`` seconds (and at least one retry) it gives up with exit 1 (the job fails, no movie is
    marked failed, and the next run retries the batch).
    """
    names = [line.strip() for line in Path(inputs_file).read_text().splitlines() if line.strip()]
    inputs = [os.path.join(input_dir, n) if input_dir else n for n in names]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text("")

    messages: dict[str, str] = {}
    started = time.monotonic()
    wait = max(0.0, retry_wait_s)
    attempt = 0
    while True:
        attempt += 1
        clear_folder(out)
        Path(out).mkdir(parents=True, exist_ok=True)
        if not inputs:
            break
        arguments = [] if single else inputs
        code, stderr = run([*command, *arguments, "--out", out], log)
        if code != 0 and not (code == 1 and PARTIAL_FAILURE in stderr):
            last = [line for line in stderr.splitlines() if line.strip()][-1:] or [f"exit {code}"]
            print(f"{' '.join(command[:2])} failed (exit {code}): {last[0]}", file=sys.stderr)
            return 1
        messages = error_messages(stderr, inputs)
        transient = {k: v for k, v in messages.items() if is_transient(v)}
        if not transient:
            break
        first, reason = next(iter(transient.items()))
        reason = f"{os.path.basename(first)}: {reason}"
        elapsed = time.monotonic() - started
        gave_up = attempt > 1 and elapsed + wait > retry_limit_s  # at least one retry
        state = {
            "step": command[1] if len(command) > 1 else command[0],
            "reason": reason,
            "inputs": len(transient),
            "attempt": attempt,
            "since_s": round(elapsed, 1),
            "gave_up": gave_up,
        }
        atomic_write(Path(out) / WAITING, json.dumps(state) + "\n")
        with open(log, "a") as fh:
            if gave_up:
                fh.write(f"gave up after {attempt} attempts: {reason}\n")
            else:
                fh.write(f"waiting {wait:g} s (transient error, attempt {attempt}): {reason}\n")
        if gave_up:
            print(
                f"{state['step']}: transient error persisted for {elapsed:.0f} s "
                f"({reason}); the next run retries this batch",
                file=sys.stderr,
            )
            return 1
        time.sleep(wait)
        wait = min(max(wait * 2, 0.1), 300.0)

    rows = star_rows(star, column) if star else {}
    status_lines = ["input\tstatus\tmessage"]
    ok_lines: list[str] = []
    kept: list[str] = []
    for name, path in zip(names, inputs, strict=True):
        stem = _stem(name)
        if single:
            product, done = path, True
        elif products:
            product = os.path.join(out, stem + products)
            done = os.path.exists(product)
        else:
            product = str(rows[stem][column]) if stem in rows else ""
            done = stem in rows
        state, message = "ok", ""
        if not done:
            state = "failed"
            message = messages.get(path, "no output written")
        elif max_fit_resolution is not None and star:
            fit = float(rows[stem].get("rlnCtfMaxResolution", 0.0))
            if fit > max_fit_resolution:
                state = "rejected"
                message = f"CTF fit resolution {fit:.1f} Å worse than {max_fit_resolution:g} Å"
        if state == "ok":
            ok_lines.append(product)
            kept.append(stem)
        status_lines.append(f"{name}\t{state}\t{message}")

    if selected:
        if rows and kept:
            import starfile

            data = starfile.read(star, always_dict=True)
            key, table = star_block(data, column)
            keep = table[column_stems(table, column).isin(kept)]
            with atomic_path(selected, suffix=".star") as tmp:
                starfile.write({**data, key: keep.reset_index(drop=True)}, tmp, overwrite=True)
        else:
            atomic_write(selected, "")
    atomic_write(ok, "".join(f"{line}\n" for line in ok_lines))
    atomic_write(status, "\n".join(status_lines) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line form (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("run_step.py: missing '--' before the step command", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="run_step.py")
    parser.add_argument("--inputs", required=True, help="text file, one input per line")
    parser.add_argument("--input-dir", default="", help="folder the inputs are relative to")
    parser.add_argument("--out", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--ok", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument(
        "--products", help="suffix of each input's output in OUT: '.mrc' -> OUT/<stem>.mrc"
    )
    parser.add_argument("--star", help="STAR file with one row per successful input")
    parser.add_argument("--column", default="rlnMicrographName")
    parser.add_argument("--max-fit-resolution", type=float, default=None)
    parser.add_argument("--selected", help="write the selected rows of --star here")
    parser.add_argument("--single", action="store_true", help="inputs are not arguments")
    parser.add_argument("--retry-wait", type=float, default=30.0, help="seconds (transient)")
    parser.add_argument("--retry-limit", type=float, default=1800.0, help="seconds (transient)")
    options = vars(parser.parse_args(argv[:split]))
    files = [options.pop(k) for k in ("inputs", "out", "status", "ok", "log")]
    return run_step(
        argv[split + 1 :],
        *files,
        retry_wait_s=options.pop("retry_wait"),
        retry_limit_s=options.pop("retry_limit"),
        **options,  # input_dir, products, star, column, max_fit_resolution, selected, single
    )


def from_snakemake(smk) -> int:
    """Script-directive form: options from the rule's params, threads and resources."""
    p = smk.params
    device = smk.config["resources"][smk.rule].get("device", "auto")
    if device == "auto":
        device = "gpu" if getattr(smk.resources, "gpu", 0) > 0 else "cpu"
    command = [*p.command, "--device", device, "--threads", str(smk.threads)]
    if smk.rule == "extract":
        # paths in the STAR/.cs files relative to the run folder (RELION's project
        # folder; Snakemake runs here). A layout, not a parameter: readers take both
        # layouts, so it is left out of params and never redoes a finished batch.
        command += ["--paths-relative-to", "."]
    out = os.path.dirname(smk.output.status)
    return run_step(
        command,
        smk.input.inputs,
        out,
        smk.output.status,
        smk.output.ok,
        str(smk.log[0]),
        input_dir=p.get("input_dir", ""),
        products=p.get("products"),
        star=os.path.join(out, p.star) if p.get("star") else None,
        column=p.get("column", "rlnMicrographName"),
        max_fit_resolution=p.get("max_fit_resolution"),
        selected=smk.output.get("selected"),
        single=bool(p.get("single", False)),
        # from the config, not params: a change of patience must not redo finished batches
        retry_wait_s=float(smk.config.get("retry", {}).get("wait_s", 30.0)),
        retry_limit_s=float(smk.config.get("retry", {}).get("limit_s", 1800.0)),
    )


def column_stems(table, column: str):
    """The stems of a STAR column, as a pandas Series aligned with ``table``."""
    return table[column].astype(str).map(_stem)


if "snakemake" in globals():
    # held until this job ends: a new controller waits for it (workflows.control)
    _JOBS_LOCK = control.hold_jobs_lock()
    control.set_parent_death_signal()
    sys.exit(from_snakemake(globals()["snakemake"]))
elif __name__ == "__main__":
    sys.exit(main())

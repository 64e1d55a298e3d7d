"""Does preprocessing keep pace with the acquisition while a reconstruction runs?

Runs the default ``cryofac demo`` (48 movies of 2048², one every 10 s) with
``--no-serve`` under ``nice``, samples the load average every 10 s, then reads the
run folder: when each movie landed (its file's modification time, set by the demo's
microscope when it lands the movie, :mod:`cryofac.demo.microscope`), when it was
processed, i.e. its batch extracted (``movies.tsv`` ``processed_at``), and when each
reconstruction ran (``process.log``: ``reconstruction started/finished``); from
``demo-result.json``: the landing rate, the map's resolution against the truth and the
demo's wall time. ``--out`` writes the report as Markdown (with the machine and load).

    python benchmarks/workflow_demo_pace.py [--dir /tmp/cryofac-demo-pace] [--analyse-only]
        [--out benchmarks/results/workflow_demo_pace.md] [--movies N] [--fast]

Prints a JSON report: the lag (processed − landed) of the movies that landed while a
reconstruction ran and of the others, the largest backlog (landed, not yet processed)
during a reconstruction, the processing rate inside the reconstruction windows against
the acquisition rate, and the load average seen. On a shared machine the figures are
upper bounds (the load is reported beside them).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def run_demo(
    workdir: Path, samples: list[tuple[float, float]], movies: int | None, fast: bool = False
) -> float:
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), os.getloadavg()[0]))
            stop.wait(10)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.time()
    command = ["nice", "-n", "10", sys.executable, "-m", "cryofac.cli", "demo"]
    command += ["--no-serve", "--fresh", "--dir", str(workdir)]
    command += ["--movies", str(movies)] if movies else []
    command += ["--fast"] if fast else []
    done = subprocess.run(command, capture_output=True, text=True)
    stop.set()
    (workdir / "demo.out").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return time.time() - t0


def _windows(log: Path, day: dt.date) -> list[tuple[float, float, str]]:
    """(start, end, target) of each reconstruction, from the controller's log lines."""
    started: dict[str, float] = {}
    windows = []
    pattern = re.compile(r"^(\d\d:\d\d:\d\d) reconstruction (started|finished): (\S+)")
    for line in log.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if not match:
            continue
        clock = dt.datetime.combine(day, dt.time.fromisoformat(match.group(1)))
        when = clock.timestamp()
        if match.group(2) == "started":
            started[match.group(3)] = when
        elif match.group(3) in started:
            windows.append((started.pop(match.group(3)), when, match.group(3)))
    windows += [(s, float("inf"), t) for t, s in started.items()]  # never finished
    return windows


def analyse(workdir: Path, samples: list[tuple[float, float]]) -> dict:
    run = next((workdir / "runs").iterdir())
    raw = next((workdir / "raw").iterdir())
    with (run / "movies.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    landed = {r["movie"]: (raw / r["movie"]).stat().st_mtime for r in rows}
    done = {
        r["movie"]: dt.datetime.fromisoformat(r["processed_at"].replace("Z", "+00:00")).timestamp()
        for r in rows
        if r.get("processed_at")
    }
    day = dt.datetime.fromtimestamp(min(landed.values())).date()
    windows = _windows(workdir / "process.log", day)

    def in_window(t: float) -> bool:
        return any(s <= t < e for s, e, _ in windows)

    lag_during = [done[m] - landed[m] for m in done if in_window(landed[m])]
    lag_other = [done[m] - landed[m] for m in done if not in_window(landed[m])]

    def backlog(t: float) -> int:
        return sum(landed[m] <= t for m in landed) - sum(done.get(m, 1e20) <= t for m in landed)

    times = sorted({*landed.values(), *done.values()})
    during = [backlog(t) for t in times if in_window(t)]
    first, last = min(landed.values()), max(landed.values())
    acquisition_per_h = (len(landed) - 1) / (last - first) * 3600 if last > first else None
    window_rates = []
    for s, e, target in windows:
        end = e if e != float("inf") else max(done.values())
        inside = sum(s <= t < e for t in done.values())
        window_rates.append(
            {
                "target": target,
                "seconds": round(end - s, 1),
                "movies_processed_inside": inside,
                "movies_landed_inside": sum(s <= t < e for t in landed.values()),
                "processed_per_h": round(inside / (end - s) * 3600, 1) if end > s else None,
            }
        )
    loads = [load for _, load in samples]

    def stats(values: list[float]) -> dict | None:
        if not values:
            return None
        return {
            "n": len(values),
            "median_s": round(statistics.median(values), 1),
            "max_s": round(max(values), 1),
        }

    summary = json.loads((run / "summary.json").read_text())
    demo = {}
    if (workdir / "demo-result.json").exists():
        demo = json.loads((workdir / "demo-result.json").read_text())
    stages = {}
    for folder in sorted((run / "reconstruct").glob("p*")):
        result, progress = folder / "result.json", folder / "progress.json"
        if result.exists():
            stages[folder.name] = json.loads(result.read_text()).get("timings")
        elif progress.exists():
            state = json.loads(progress.read_text())
            stages[folder.name] = {k: state.get(k) for k in ("stage", "fraction", "eta_s")}
    return {
        "reconstruction_stages": stages,
        "demo_wall_s": demo.get("wall_s"),
        "demo_acquisition": demo.get("acquisition"),
        "processing_wall_s": demo.get("processing_wall_s"),
        "resolution_claimed_A": (demo.get("summary") or {}).get("resolution_A"),
        "resolution_vs_truth_A": demo.get("resolution_vs_truth_A"),
        "movies_failed": summary.get("movies_failed"),
        "all_processed_after_last_landed_s": round(max(done.values()) - last, 1) if done else None,
        "movies": len(rows),
        "processed": len(done),
        "acquisition_per_h": round(acquisition_per_h, 1) if acquisition_per_h else None,
        "reconstructions": window_rates,
        "lag_landed_during_reconstruction": stats(lag_during),
        "lag_landed_otherwise": stats(lag_other),
        "max_backlog_during_reconstruction": max(during) if during else None,
        "summary_keeping_up": summary.get("keeping_up"),
        "load_average": {
            "min": round(min(loads), 2),
            "mean": round(statistics.mean(loads), 2),
            "max": round(max(loads), 2),
        }
        if loads
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cryofac-demo-pace"))
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    parser.add_argument("--movies", type=int, help="movies to acquire [the default demo's 48]")
    parser.add_argument("--fast", action="store_true", help="the fast preset (16 movies)")
    args = parser.parse_args()
    samples: list[tuple[float, float]] = []
    report: dict = {}
    if not args.analyse_only:
        report["wall_s"] = round(run_demo(args.dir, samples, args.movies, args.fast), 1)
        (args.dir / "load.json").write_text(json.dumps(samples))
    elif (args.dir / "load.json").exists():
        samples = [tuple(s) for s in json.loads((args.dir / "load.json").read_text())]
    report.update(analyse(args.dir, samples))
    report["cpus"] = os.cpu_count()
    text = json.dumps(report, indent=2)
    if args.out is None:
        print(text)
        return
    from benchmarks.report import cpu_model, load_average, write_report

    write_report(
        args.out,
        [
            "# The default `cryofac demo`: acquisition pace, preprocessing lag, end to end",
            "",
            f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; load when written: "
            f"{load_average()}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            "Command: `python benchmarks/workflow_demo_pace.py --dir "
            f"{args.dir}{f' --movies {args.movies}' if args.movies else ''}"
            f"{' --fast' if args.fast else ''}"
            f"{' --analyse-only' if args.analyse_only else ''}`",
            "",
            "```json",
            text,
            "```",
        ],
    )


if __name__ == "__main__":
    main()

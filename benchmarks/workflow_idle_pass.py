"""An idle ``cryofac process --watch`` pass at 50,000 movies: what it costs, what it writes.

Builds a run folder as a finished 50,000-movie acquisition leaves it (500 batches of
100 with manifests and tables, gathered particles, the reconstruction due), then
times the controller's idle pass (scan, EER and metadata checks, the idle decision,
the summary refresh that finds nothing changed) and lists every file it wrote.

    python benchmarks/workflow_idle_pass.py [--movies 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def build(root: Path, n_movies: int, batch_size: int, config: dict) -> tuple[Path, Path]:
    from workflows import batching, idle, summary

    raw, out = root / "raw", root / "out"
    raw.mkdir()
    past = time.time() - 3600
    names = [f"FoilHole_{i:08d}_Data_1_2_20260112_090000_fractions.tiff" for i in range(n_movies)]
    for name in names:
        (raw / name).write_bytes(b"")
        os.utime(raw / name, (past, past))
    (raw / "acquisition.json").write_text(json.dumps({"pixel_size_A": 1.0, "voltage_kV": 300}))
    for k in range(0, n_movies, batch_size):
        batch = batching.batch_name(k // batch_size)
        folder = out / "batches" / batch
        folder.mkdir(parents=True)
        movies = names[k : k + batch_size]
        (folder / "movies.txt").write_text("".join(f"{m}\n" for m in movies))
        rows = [{"movie": m, "batch": batch, "status": "ok", "n_particles": 20} for m in movies]
        (folder / "movies.tsv").write_text(summary.format_tsv(rows, summary.MOVIE_COLUMNS))
        # what gathering depends on (idle.is_idle compares it with particles/count.json)
        (folder / "extract").mkdir()
        (folder / "extract" / "status.tsv").write_text("input\tstatus\tmessage\n")
    (out / "particles").mkdir()
    count = 20 * n_movies
    (out / "particles" / "count.json").write_text(json.dumps({"particles": count}))
    downstream = config["downstream"]
    n = batching.reconstruction_target(downstream["min_particles"], downstream["growth"], count)
    (out / "reconstruct" / f"p{n:07d}").mkdir(parents=True)
    (out / "reconstruct" / f"p{n:07d}" / "result.json").write_text("{}")
    state = out / ".cryofac"
    state.mkdir()
    idle.record_pass(state, idle.fingerprint(config))
    summary.write_summary(out, raw, "idle", batching.scan_movies(raw))
    return raw, out


def idle_pass(raw: Path, out: Path, config: dict) -> bool:
    """What ``cryofac process --watch`` does each interval when nothing is new."""
    from workflows import batching, cli, idle, metadata

    scan = cli.scan_raw(raw, config["movies"])
    metadata.refuse_eer(raw, scan.eligible)
    assigned = {m for ms in batching.read_manifests(out).values() for m in ms}
    metadata.refuse_mismatch(
        {"pixel_size_A": 1.0, "voltage_kV": 300},
        raw,
        [m for m in scan.eligible if m not in assigned],
    )
    quiet = idle.is_idle(out, out / ".cryofac", scan, config)
    if quiet:
        cli._refresh_if_changed(out, raw, scan, "idle")
    return quiet


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def main() -> None:
    from workflows.cli import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--movies", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    config = load_config(None, {"batch_size": 100, "movies": {"quiet_period_s": 60}})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        raw, out = build(Path(tmp), args.movies, 100, config)
        print(
            f"built {args.movies} movies / {args.movies // 100} batches in {time.perf_counter() - t:.1f} s"
        )
        before = snapshot(out)
        walls, cpus = [], []
        for _ in range(args.repeat):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            assert idle_pass(raw, out, config), "the pass was not idle"
            walls.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        after = snapshot(out)
        written = sorted(k for k in after if before.get(k) != after[k])
        print(
            f"idle pass at {args.movies} movies: wall {min(walls):.3f}-{max(walls):.3f} s, "
            f"CPU {min(cpus):.3f}-{max(cpus):.3f} s over {args.repeat} passes; "
            f"files written: {len(written)} {written[:3]}"
        )
        print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()

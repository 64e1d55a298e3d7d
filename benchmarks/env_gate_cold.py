"""First gate decision on a fresh engine and connection (cold-ish), optionally right
after dropping the OS page cache (``echo 1 > /proc/sys/vm/drop_caches``, needs root).

Times ``evaluate_gate("krios1")`` at the end of a database built by
``benchmarks/env_ingest_gate.py --keep-db`` / ``--pg-keep-db`` (allowed case):

    python benchmarks/env_gate_cold.py sqlite:////work/bench-data/env_year.sqlite3 --n 5 --drop-caches
    python benchmarks/env_gate_cold.py postgresql+psycopg://postgres@127.0.0.1:5432/env_bench_30d
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env_ingest_gate as bench  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from instrument_env.db import make_engine, session_factory  # noqa: E402
from instrument_env.gate import evaluate_gate  # noqa: E402
from instrument_env.limits import load_env_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="SQLAlchemy URL of a kept benchmark database")
    parser.add_argument("--n", type=int, default=10, help="decisions, 0.5 s apart")
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = load_env_config()
    at = bench.END - timedelta(seconds=1)
    wall, cpu, loads = [], [], []
    for _ in range(args.n):
        if args.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as handle:
                handle.write("1\n")
        loads.append(round(os.getloadavg()[0], 2))
        t, c = time.perf_counter(), time.process_time()
        engine = make_engine(args.url, poolclass=NullPool)
        with session_factory(engine)() as session:
            decision = evaluate_gate(session, "krios1", at, config=config)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        engine.dispose()
        if not decision.allowed:
            raise SystemExit(f"expected the allowed case: {decision.reasons}")
        time.sleep(0.5)
    result = {
        "url": args.url,
        "n": args.n,
        "drop_caches": args.drop_caches,
        "wall_ms": [round(x, 1) for x in wall],
        "cpu_ms": [round(x, 1) for x in cpu],
        "median_wall_ms": statistics.median(wall),
        "max_wall_ms": max(wall),
        "median_cpu_ms": statistics.median(cpu),
        "load_1min": loads,
    }
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

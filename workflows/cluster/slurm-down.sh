#!/usr/bin/env bash
# Stop the single-node cluster that slurm-up.sh started (slurmd, slurmctld,
# slurmdbd, munged). MariaDB and the accounting database are left alone.
set -uo pipefail
for daemon in slurmd slurmctld slurmdbd munged; do
    pid="$(pgrep -x "$daemon" | head -1)"
    [ -n "$pid" ] || continue
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
done
echo "slurm-down: stopped" >&2

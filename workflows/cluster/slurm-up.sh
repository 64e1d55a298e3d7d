#!/usr/bin/env bash
# A real single-node SLURM cluster on this (Debian) machine, for CI and for a
# developer who wants to try `cryofac process --profile slurm` without a cluster:
# munge, slurmdbd on the loopback MariaDB (accounting, so `sacct` works; the
# Snakemake SLURM executor plugin reads job states from it), slurmctld and one
# slurmd with two partitions:
#   cpu  (default)  - this node's CPUs and memory
#   gpu             - the same node, with a count-only GPU gres (no device files),
#                     so `--gpus=1` is schedulable; jobs still compute on the CPU
#                     unless CuPy finds a real GPU (see workflows/README.md).
# The node declares the machine's real CPUs and memory (no faked hardware): the
# workflow's per-step threads and memory come from its configuration (see
# workflows/profiles/slurm/cryofac.yaml and tests/workflows/test_slurm.py), so
# configure those to fit, not the node.
#
# Idempotent: when the cluster is already up (node idle or busy) it returns at once.
# Run as root. Environment: SLURM_UP_GPUS (count-only GPUs of the node, default 2),
# SLURM_UP_TIMEOUT (seconds to wait for the node, default 120).
# Stop it with workflows/cluster/slurm-down.sh.
set -euo pipefail

GPUS="${SLURM_UP_GPUS:-2}"
TIMEOUT="${SLURM_UP_TIMEOUT:-120}"
NODE="$(hostname -s)"
CLUSTER=cryofac
ACCOUNT=cryofac
DB_USER=slurm
DB_PASS=cryofac-slurmdbd
SPOOL=/var/spool/slurmctld
LOGDIR=/var/log/slurm

say() { echo "slurm-up: $*" >&2; }

node_ready() {
    command -v sinfo >/dev/null 2>&1 || return 1
    local state
    state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1)" || return 1
    case "$state" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        *) return 1 ;;
    esac
}

if node_ready && sacct -n -X -S now >/dev/null 2>&1; then
    say "already up ($(sinfo -h -N -n "$NODE" -o "%N %T" | head -1))"
    exit 0
fi

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm, slurmdbd, munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends slurm-wlm slurmdbd munge slurm-client >/dev/null \
        || { apt-get update >/dev/null \
            && apt-get install -y --no-install-recommends slurm-wlm slurmdbd munge slurm-client >/dev/null; }
fi
if ! command -v mariadb >/dev/null && ! command -v mysql >/dev/null; then
    say "installing mariadb-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server >/dev/null
fi
MYSQL="$(command -v mariadb || command -v mysql)"

# 2. MariaDB on loopback (start it if it is not running)
if ! "$MYSQL" -u root -e 'SELECT 1' >/dev/null 2>&1; then
    say "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &)
    for _ in $(seq 60); do "$MYSQL" -u root -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
fi
"$MYSQL" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
SQL

# 3. configuration (rewritten each time: it is derived from this machine)
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
mkdir -p /etc/slurm "$SPOOL" /var/spool/slurmd "$LOGDIR" /run/slurm
chown slurm:slurm "$SPOOL" "$LOGDIR" /run/slurm 2>/dev/null || true
cat >/etc/slurm/slurm.conf <<CONF
# written by workflows/cluster/slurm-up.sh (single-node test cluster)
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
# no cgroups inside a container: track processes by parent id
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
ReturnToService=2
# a job over its time limit is killed at once (the timeout test waits for it)
OverTimeLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MpiDefault=none
# a job without --mem gets 1 GB per CPU, not the whole node
DefMemPerCPU=1000
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
CONF
# Count-only GPUs: Slurm 22.05 drops GPUs without a File= ("Removing file-less
# GPU"), so each gets a placeholder character device (an alias of /dev/null). No
# device cgroup is used (TaskPlugin=task/none), so nothing is constrained by them.
GPU_DIR=/var/spool/slurmd/count-only-gpu
mkdir -p "$GPU_DIR"
for i in $(seq 0 $((GPUS - 1))); do
    [ -c "$GPU_DIR/gpu$i" ] || { rm -f "$GPU_DIR/gpu$i"; mknod "$GPU_DIR/gpu$i" c 1 3; }
done
cat >/etc/slurm/gres.conf <<CONF
# count-only GPUs (placeholder devices): scheduling only
AutoDetect=off
NodeName=$NODE Name=gpu File=$GPU_DIR/gpu[0-$((GPUS - 1))]
CONF
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf

# 4. daemons (each started only when not running)
running() { pgrep -x "$1" >/dev/null; }
if ! running munged; then
    say "starting munged"
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
fi
if ! running slurmdbd; then
    say "starting slurmdbd"
    slurmdbd
fi
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! running slurmctld; then
    say "starting slurmctld"
    slurmctld
fi
if ! running slurmd; then
    say "starting slurmd"
    slurmd
fi
# an account for the jobs (the profile's slurm_account), and this user in it
if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=cryofac organization=cryofac >/dev/null
fi
if ! sacctmgr -n -P list assoc format=user,account | grep -qx "$(id -un)|$ACCOUNT"; then
    sacctmgr -i add user "$(id -un)" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
fi

# 5. wait for the node
deadline=$((SECONDS + TIMEOUT))
until node_ready; do
    state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1 || true)"
    case "$state" in
        down* | drain* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    if ((SECONDS > deadline)); then
        say "node $NODE not idle after ${TIMEOUT}s (state '${state:-none}'); see $LOGDIR/"
        exit 1
    fi
    sleep 1
done
say "up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB %G' | tr '\n' ';')"

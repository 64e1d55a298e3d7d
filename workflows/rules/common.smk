# Configuration, movie discovery, batching and input functions.
import math
import os
import shlex

from snakemake.utils import validate

from cryofac.config import load_pipeline
from workflows import batching
from workflows import resources as memory
from workflows.summary import write_summary

validate(config, schema="../schemas/config.schema.yaml")

PIPELINE_SECTIONS = ("acquisition", "motioncorr", "ctf", "picking", "extraction", "reconstruct")
PIPELINE = load_pipeline(overrides={k: config[k] for k in PIPELINE_SECTIONS if k in config})
ACQ = PIPELINE["acquisition"]

if not config["raw_dir"]:
    raise WorkflowError("config raw_dir is empty: run `cryofac process RAW_DIR --out OUT`")
RAW_DIR = os.path.abspath(config["raw_dir"])
if not os.path.isdir(RAW_DIR):
    raise WorkflowError(f"{RAW_DIR}: acquisition folder not found")

CRYOFAC = config["cryofac"]
RECONSTRUCT_MODE = config.get("reconstruct_mode", "inline")

SCAN = batching.scan_movies(
    RAW_DIR,
    patterns=config["movies"]["patterns"],
    exclude=config["movies"]["exclude"],
    quiet_period_s=config["movies"]["quiet_period_s"],
)
BATCHES, WAITING = batching.plan_batches(
    batching.read_manifests("."), SCAN.eligible, config["batch_size"], flush=config["flush"]
)


def gain_reference():
    gain = config["movies"]["gain"]
    if gain == "auto":
        path = os.path.join(RAW_DIR, "gain.mrc")
        return path if os.path.isfile(path) else ""
    return os.path.abspath(os.path.join(RAW_DIR, gain)) if gain else ""


GAIN = gain_reference()


def batch_movies(wildcards):
    """Absolute paths of the movies of one batch."""
    return [os.path.join(RAW_DIR, m) for m in BATCHES[wildcards.batch]]


def step_command(step, *options):
    """`cryofac STEP OPTIONS... EXTRA...` as a list of strings; a change of it reruns the step."""
    extra = shlex.split(config.get("extra", {}).get(step, ""))
    return [CRYOFAC, step, *(str(o) for o in options), *extra]


#: Version of each step's rule and script. Reruns follow the inputs, the parameters and
#: these versions (`--rerun-triggers mtime params input`), never the code or mtime of
#: the workflow's files: bump a step's version when a change of its rule or script
#: changes what it produces, and that step (and what uses its outputs) runs again.
STEP_VERSIONS = {
    "motioncorr": 1,
    "ctf": 1,
    "pick": 1,
    "extract": 1,
    "batch_table": 1,
    "reconstruct": 1,
}


def step_version(step):
    """Params of a step's version: {"version": N}; none at version 1, so that run
    folders made before versions existed are not redone."""
    version = STEP_VERSIONS[step]
    return {"version": version} if version != 1 else {}


def step_resources(step):
    return config["resources"][step]


def job_resources(step):
    """Snakemake resources of a step from config["resources"][step]: memory (MB;
    auto: reconstruct_mem_mb), runtime (minutes; a retry gets runtime x runtime_growth^(attempt-1)), GPUs and,
    when set, the SLURM partition and account."""
    res = config["resources"][step]
    growth = res.get("runtime_growth", 1)

    def runtime(wildcards, attempt):
        return int(math.ceil(res["runtime"] * growth ** (attempt - 1)))

    mem_mb = res["mem_mb"]
    if mem_mb == "auto":
        if step != "reconstruct":
            raise WorkflowError(f"resources.{step}.mem_mb: auto is for reconstruct only")
        mem_mb = reconstruct_mem_mb
    resources = {"mem_mb": mem_mb, "runtime": runtime, "gpu": res["gpu"]}
    if res.get("partition"):
        resources["slurm_partition"] = res["partition"]
    if res.get("account"):
        resources["slurm_account"] = res["account"]
    return resources


def reconstruct_mem_mb(wildcards):
    """Memory of reconstruct/p<N>: estimated from N particles x the extracted box,
    capped at max_mem_mb or the node's memory (workflows/resources.py)."""
    res = config["resources"]["reconstruct"]
    box = math.ceil(PIPELINE["extraction"]["box_px"] / config["extract_bin"])
    need = memory.reconstruct_mem_mb(int(wildcards.n), box)
    cap = res.get("max_mem_mb") or memory.node_mem_mb(res.get("partition", ""))
    return memory.capped_mem_mb(need, cap)


def step_device(step, gpu):
    """--device of a step: config device, or gpu when it was given GPUs (auto)."""
    device = config["resources"][step].get("device", "auto")
    return ("gpu" if gpu > 0 else "cpu") if device == "auto" else device


def gathered_count():
    """Particles gathered from all finished batches (after the checkpoint ran)."""
    import json

    with open(checkpoints.gather_particles.get().output.counts) as fh:
        return json.load(fh)["particles"]


def reconstruction_targets(wildcards):
    """The reconstruction due at the current particle count (none below the threshold)."""
    if not BATCHES:
        return []
    count = gathered_count()
    n = batching.reconstruction_target(
        config["downstream"]["min_particles"],
        config["downstream"]["growth"],
        count,
        final=config["flush"],
    )
    return [f"reconstruct/p{n:07d}/result.json"] if n is not None else []


def final_state():
    """After a successful run: complete once the acquisition is over and all ran.

    In a pass of `cryofac process` (reconstruct_mode skip) the controller has the
    final word (a reconstruction may still run beside it): still running here.
    """
    if RECONSTRUCT_MODE == "skip":
        return "running"
    return "complete" if config["flush"] and not WAITING and not SCAN.recent else "idle"

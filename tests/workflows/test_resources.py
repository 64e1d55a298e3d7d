"""Issue 18: the reconstruction's memory request follows its particles x box and never
exceeds the node (a fixed 64,000 MB could not be scheduled on a 24 GB node)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from workflows import resources
from workflows.cli import load_config


def test_request_follows_particles_and_box_and_is_capped_at_the_node():
    small = resources.reconstruct_mem_mb(5_000, 128)
    assert resources.reconstruct_mem_mb(10_000, 128) > small  # more particles, more memory
    assert resources.reconstruct_mem_mb(5_000, 256) > small  # larger box, more memory
    # the arrays: 5,000 particles x 128² px x 12 B + 8 volumes of 256³ x 8 B, + 1500 MB
    assert small == int(1500 + (5_000 * 128**2 * 12 + 8 * 256**3 * 8) / 2**20 + 0.5)
    big = resources.reconstruct_mem_mb(200_000, 256)
    assert big > 24_000
    assert resources.capped_mem_mb(big, 24_000) == 24_000  # schedulable on a 24 GB node
    assert resources.capped_mem_mb(small, 24_000) == small  # a small job asks for little
    assert resources.capped_mem_mb(small, None) == small


def test_node_memory_is_this_machine_or_the_partitions_largest_node():
    with open("/proc/meminfo") as fh:
        total = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    assert resources.node_mem_mb() == total // 1024
    if shutil.which("sinfo"):
        listed = subprocess.run(["sinfo", "-h", "-o", "%P %m"], capture_output=True, text=True)
        for line in listed.stdout.splitlines()[:1]:
            partition, memory = line.split()
            resources.node_mem_mb.cache_clear()
            assert resources.node_mem_mb(partition.rstrip("*")) == int(memory.rstrip("+"))


def test_auto_is_the_default_and_only_for_the_reconstruction(tmp_path):
    config = load_config(None, {}, None)
    assert config["resources"]["reconstruct"]["mem_mb"] == "auto"
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: {reconstruct: {mem_mb: lots}}\n")
    with pytest.raises(Exception, match="mem_mb"):
        load_config(bad, {}, None)

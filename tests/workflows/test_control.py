"""Children that die with their parent: the race between the fork and the request."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from workflows.control import die_with_parent, die_with_this_process

SLEEP = [sys.executable, "-c", "import time; time.sleep(0.2)"]


def test_a_child_whose_parent_is_already_gone_exits_before_it_runs():
    # the child's parent is this process; told another pid, it acts as when the parent
    # died between the fork and the death-signal request (and the child was re-parented)
    other = os.getppid()
    orphan = subprocess.Popen(SLEEP, preexec_fn=functools.partial(die_with_parent, other))
    assert orphan.wait(timeout=30) == 128 + 15
    # with its real parent's pid (taken before the fork) it runs as asked
    child = subprocess.Popen(SLEEP, preexec_fn=die_with_this_process())
    assert child.wait(timeout=30) == 0
    # without a pid: the request alone, as before
    assert subprocess.Popen(SLEEP, preexec_fn=die_with_parent).wait(timeout=30) == 0

"""Fixtures shared by the pipeline's command tests."""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest


@pytest.fixture
def assert_every_option_changes() -> Callable:
    """``check(run, changes)``: each option changes what a command writes (issue 19).

    ``run(label, *extra_args)`` runs the command with its baseline arguments plus
    ``extra_args`` and returns what it wrote, in a comparable form; ``changes`` holds one
    option a line, as typed after the command (``--voltage 200  # why``). The baseline is run
    twice and must give the same result, so a difference is the option's doing.
    """

    def check(run: Callable, changes: str) -> None:
        baseline = run("baseline")
        assert run("again") == baseline, "the command is not deterministic"
        changed = [shlex.split(line, comments=True) for line in changes.strip().splitlines()]
        idle = [args[0] for args in changed if run(args[0].lstrip("-"), *args) == baseline]
        assert not idle, f"options that changed nothing: {idle}"

    return check

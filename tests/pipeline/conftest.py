"""Fixtures shared by the pipeline's command tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest


@pytest.fixture
def assert_every_option_changes() -> Callable:
    """``check(run, changes)``: each option changes what a command writes (issue 19).

    ``run(label, *extra_args)`` runs the command with its baseline arguments plus
    ``extra_args`` and returns what it wrote, in a comparable form; ``changes`` maps an
    option's name to the extra arguments that change it. The baseline is run twice and
    must give the same result, so a difference is the option's doing.
    """

    def check(run: Callable, changes: Mapping[str, Sequence[str]]) -> None:
        baseline = run("baseline")
        assert run("again") == baseline, "the command is not deterministic"
        idle = [name for name, extra in changes.items() if run(name, *extra) == baseline]
        assert not idle, f"options that changed nothing: {idle}"

    return check

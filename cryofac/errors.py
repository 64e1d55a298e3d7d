"""Exception types users can act on. Each message says what went wrong and where."""

from __future__ import annotations


class CryofacError(Exception):
    """Base class of every error that is reported to a user as one line."""


class ConfigError(CryofacError):
    """A configuration file is missing, malformed, or holds an invalid value.

    The message names the file, the key (dotted path) and the problem.
    """

    def __init__(self, path: str, key: str, problem: str):
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"{where}: {problem}")

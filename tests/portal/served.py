"""The portal served for real in a child process (``cryofac portal serve``, ``worker``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.portal.smtp_server import free_port


def wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited with {proc.returncode}"
            time.sleep(0.2)
    raise AssertionError(f"{what} did not listen on {port}")


def cryofac(*args: str, **popen) -> subprocess.Popen:
    """``cryofac ARGS`` in a child process (one secret key, output discarded)."""
    env = dict(os.environ, CRYOFAC_SECRET_KEY="served-test-secret")
    return subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **popen,
    )


@contextlib.contextmanager
def serving(database_url: str, *options: str) -> Iterator[str]:
    """``cryofac portal serve OPTIONS`` on a free port; yields its base URL."""
    port = free_port()
    server = cryofac(
        "portal", "serve", "--database-url", database_url, "--port", str(port), *options
    )
    try:
        wait_for_port(port, server, "cryofac portal serve")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)

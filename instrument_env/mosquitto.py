"""A private Mosquitto broker configured from the shipped ``cryofac/config/mosquitto.conf``.

For fault-injection tests and benchmarks: each broker runs on a free loopback port with
its persistence file in its own folder, so it can be killed and restarted without
touching a shared broker. The settings that make ingest lossless (persistence, queue
and in-flight limits) come from the shipped file, so the tests check that file; the
listeners, paths, credentials and TLS files are the caller's.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryofac.config import PACKAGE_DIR

SHIPPED_CONF = PACKAGE_DIR / "mosquitto.conf"
#: Lines of the shipped file the tests replace with their own.
_REPLACED = (
    "listener",
    "cafile",
    "certfile",
    "keyfile",
    "tls_version",
    "require_certificate",
    "password_file",
    "allow_anonymous",
    "acl_file",
    "persistence_location",
    "log_dest",
    "log_type",
    "user",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """A Mosquitto process on ``port`` with its persistence under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        password_file: Path | None = None,
        tls: dict | None = None,
        shipped: bool = True,
    ):
        """``tls``: ``{"ca", "cert", "key"}`` PEM paths for a second, TLS listener.
        ``shipped=False``: Mosquitto's defaults instead of the shipped settings (to
        measure what they lose)."""
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        lines = [
            line
            for line in (SHIPPED_CONF.read_text().splitlines() if shipped else [])
            if line.split(" ", 1)[0] not in _REPLACED
        ]
        if not shipped:
            lines.append("persistence true")  # still a fair comparison across restarts
        lines += [
            f"user {getpass.getuser()}",
            f"persistence_location {folder}/",
            f"log_dest file {folder}/mosquitto.log",
            "log_type all",
            f"listener {self.port} 127.0.0.1",
        ]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        if tls:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {tls['ca']}",
                f"certfile {tls['cert']}",
                f"keyfile {tls['key']}",
            ]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> LocalBroker:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {self.process.stderr.read().decode()[-500:]} "
                    f"log: {self.log()[-500:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker (SIGTERM: it saves its persistence file first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def spawn_ingester(
    url: str, port: int, client_id: str, *extra: str, source_root: Path | None = None
) -> subprocess.Popen:
    """``cryofac env mqtt`` as its own process (killable with -9), returned once it has
    subscribed; its log (stderr) is drained by a thread from then on. ``source_root``:
    the checkout the child imports (PYTHONPATH)."""
    import threading

    process = subprocess.Popen(
        ingester_argv(url, port, client_id, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(source_root),
        text=True,
    )
    seen = []
    while True:  # "subscribed to ..." once connected and subscribed
        line = process.stderr.readline()
        seen.append(line)
        if "subscribed to" in line:
            break
        if not line:
            process.wait(10)
            raise RuntimeError(f"ingester did not start: {''.join(seen)}")
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process


def ingester_argv(url: str, port: int, client_id: str, *extra: str) -> list[str]:
    """The command line of ``cryofac env mqtt`` for :func:`spawn_ingester` (alarm
    evaluation off: the ingester alone)."""
    import sys

    return [
        sys.executable,
        "-c",
        "import sys; from cryofac.cli import main; sys.exit(main())",
        *("env", "--db", url, "mqtt", "--port", str(port), "--client-id", client_id),
        *("--evaluate-every", "0", *extra),
    ]


def child_env(source_root: Path | None = None) -> dict[str, str]:
    """The environment of a child process importing ``source_root`` (default: this
    checkout) first."""
    import os

    return {**os.environ, "PYTHONPATH": str(source_root or PACKAGE_DIR.parent.parent)}

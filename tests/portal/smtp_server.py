"""A real SMTP server for tests (aiosmtpd on a free loopback port) that keeps what it got.

``refuse`` maps a recipient to the SMTP reply its messages get (e.g. ``451 ...`` for a
transient failure, ``550 ...`` for a permanent one); ``refuse_first`` makes the first N
DATA commands fail with 451, after which messages are accepted.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    """What the server accepted: one parsed e-mail per message, in arrival order."""

    messages: list[Message] = field(default_factory=list)
    refused: int = 0
    refuse_first: int = 0
    refuse: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's hook
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                if rcpt in self.refuse:
                    self.refused += 1
                    return self.refuse[rcpt]
            if self.refuse_first > 0:
                self.refuse_first -= 1
                self.refused += 1
                return "451 4.3.0 try again later"
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def ids(self) -> list[str]:
        with self.lock:
            return [m["Message-ID"] for m in self.messages]


class SmtpServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``received`` holds the mail."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received = Received()
        self.port = free_port()
        self.controller = Controller(self.received, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

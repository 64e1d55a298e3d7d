"""Connecting to the MQTT broker: options (address, session, credentials, TLS) and a
paho-mqtt 2 client built from them, shared by the ingester and the publishers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cryofac.errors import CryofacError
from instrument_env.mqtt_payload import TOPIC_PREFIX

DEFAULT_CLIENT_ID = "cryofac-env-ingest"


class BrokerUnavailable(CryofacError):
    """The MQTT broker could not be reached."""


class BrokerRefused(CryofacError):
    """The MQTT broker refused the connection (credentials, authorisation, protocol)."""


@dataclass(frozen=True)
class BrokerOptions:
    """How to reach the broker, and the session the subscriber keeps there.

    ``client_id`` must stay the same across restarts: the broker keeps the session
    (subscription and queued messages) under it. ``session_expiry_s``: how long the
    broker keeps the session while the subscriber is away (MQTT 5; seconds,
    0xFFFFFFFF = never). ``protocol``: ``"5"`` or ``"3.1.1"`` (clean_session=False; the
    broker's ``persistent_client_expiration`` then bounds the session). ``qos``: 1
    (at least once; default) or 0 (no guarantee: readings published while the
    subscriber is away are lost). ``receive_maximum``: most unacknowledged messages the
    broker may send at once (MQTT 5; the broker's ``max_inflight_messages`` also caps
    it). ``password`` is never shown in ``repr``. ``tls_ca``/``tls_cert``/``tls_key``:
    PEM files; ``tls_ca`` (or a client certificate) turns TLS on. ``share_group``:
    subscribe as a member of this MQTT shared subscription (``$share/GROUP/TOPIC``) so
    that several ingester processes, each with its own client id, split the messages.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = DEFAULT_CLIENT_ID
    protocol: str = "5"
    session_expiry_s: int = 7 * 86400
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    qos: int = 1
    receive_maximum: int = 10_000
    topic: str = f"{TOPIC_PREFIX}/#"
    share_group: str | None = None
    connect_timeout_s: float = 15.0
    reconnect_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol {self.protocol!r}: expected '5' or '3.1.1'")
        if self.qos not in (0, 1):
            raise ValueError(f"qos {self.qos}: expected 0 or 1 (QoS 2 is not safe with paho)")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"session_expiry_s {self.session_expiry_s} out of 0..4294967295")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum {self.receive_maximum} out of 1..65535")
        if self.share_group is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.share_group):
            raise ValueError(
                f"share_group {self.share_group!r}: letters, digits, '_', '.', '-' only"
            )
        if not self.client_id:
            raise ValueError("client_id must not be empty (the session is kept under it)")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def subscription(self) -> str:
        """The topic filter subscribed to (a shared one with ``share_group``)."""
        if self.share_group:
            return f"$share/{self.share_group}/{self.topic}"
        return self.topic


def make_client(
    options: BrokerOptions, *, client_id: str | None = None, manual_ack: bool = False
) -> Any:
    """A paho-mqtt 2 client set up from ``options`` (credentials, TLS), not yet connected."""
    import paho.mqtt.client as mqtt

    persistent = client_id is None
    client_id = options.client_id if client_id is None else client_id
    if options.protocol == "5":
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
    else:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
            manual_ack=manual_ack,
        )
    client.suppress_exceptions = True  # a callback bug must never end the network thread
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls_ca or options.tls_cert:
        client.tls_set(ca_certs=options.tls_ca, certfile=options.tls_cert, keyfile=options.tls_key)
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(options.reconnect_max_s)))
    return client


def _connect(client: Any, options: BrokerOptions, *, persistent: bool) -> None:
    """Open the connection (raises BrokerUnavailable); the CONNACK comes to on_connect."""
    kwargs: dict[str, Any] = {}
    if options.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.ReceiveMaximum = options.receive_maximum
        if persistent:
            properties.SessionExpiryInterval = options.session_expiry_s
        kwargs = {"clean_start": not persistent, "properties": properties}
    try:
        client.connect(options.host, options.port, keepalive=options.keepalive_s, **kwargs)
    except (OSError, ValueError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the MQTT broker at {options.address} ({exc})"
        ) from None

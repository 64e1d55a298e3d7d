"""Downloads: streaming with HTTP Range, checksummed manifests, expiring signed links.

* :func:`parse_range` interprets a ``Range`` header (RFC 9110 §14) for one range;
  several ranges, or a header that does not parse, fall back to the whole file (the
  RFC allows a server to ignore Range), an unsatisfiable range is a 416.
* :func:`file_response` builds a WSGI response that streams a file in fixed-size
  chunks from a generator: memory use does not depend on the file size (a 2 GB map
  streams in the same few MiB as a 2 kB one). It answers ``HEAD``, ``If-None-Match``
  (304), ``If-Range`` (a stale validator gets the whole file) and sends
  ``Accept-Ranges``, ``Content-Range``, ``ETag`` and ``Last-Modified``.
* :class:`ChecksumCache` computes SHA-256 incrementally (chunk by chunk) and
  remembers it per (path, size, mtime), so a manifest is hashed once per file version.
* :func:`make_link_token` / :func:`read_link_token` sign a (user, session, file,
  expiry) tuple with itsdangerous so a link can be handed to ``curl``/``wget`` —
  no cookie needed — and stops working at its expiry time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_write

CHUNK_BYTES = 1 << 20  # 1 MiB per read: constant memory, few syscalls
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(CryofacError):
    """The requested byte range lies outside the file (HTTP 416)."""

    def __init__(self, header: str, size: int):
        self.size = size
        super().__init__(f"range {header!r} not satisfiable for a file of {size} bytes")


class DownloadLinkError(CryofacError):
    """A signed download link is malformed, tampered with, or expired."""


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``start``–``end`` of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for by a ``Range`` header, or None for the whole file.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` (last n bytes) are understood; ``b`` is
    clipped to the file's end. Raises :class:`RangeNotSatisfiable` when the range
    starts at or beyond the end of the file (or asks for the last 0 bytes).
    """
    if not header:
        return None
    if "," in header:
        return None  # multiple ranges: serve the whole file (allowed by RFC 9110)
    match = _RANGE_RE.match(header)
    if not match:
        return None  # not a byte range we understand: ignore the header
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header, size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    end = int(last) if last != "" else size - 1
    if last != "" and end < start:
        return None  # syntactically invalid: ignore
    if start >= size:
        raise RangeNotSatisfiable(header, size)
    return ByteRange(start, min(end, size - 1), size)


def iter_file(
    path: str | Path, start: int = 0, length: int | None = None, chunk: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """Yield ``length`` bytes of ``path`` from ``start`` in chunks of at most ``chunk``.

    The file is opened when iteration starts and closed when it ends or the generator
    is closed (client went away), so nothing leaks and nothing is read whole.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = (os.fstat(handle.fileno()).st_size - start) if length is None else length
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                break  # file shrank underneath us; stop rather than spin
            remaining -= len(data)
            yield data


def etag_for(stat: os.stat_result) -> str:
    """A strong validator from inode, size and modification time (quoted)."""
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def _http_date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(timestamp), UTC), usegmt=True)


def _if_range_matches(value: str, etag: str, mtime: float) -> bool:
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison; weak tags never match
    try:
        since = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return int(mtime) <= int(since.timestamp())


def file_response(
    path: str | Path,
    headers: Mapping[str, str],
    *,
    method: str = "GET",
    download_name: str | None = None,
    mimetype: str = "application/octet-stream",
    chunk: int = CHUNK_BYTES,
):
    """A werkzeug ``Response`` streaming ``path`` with Range support (200/206/304/416).

    ``headers`` are the request headers (any case-insensitive mapping, e.g.
    ``request.headers``). The body is a generator; the file is never read whole.
    """
    from werkzeug.wrappers import Response

    path = Path(path)
    stat = path.stat()
    size = stat.st_size
    etag = etag_for(stat)
    common = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": _http_date(stat.st_mtime),
        "Cache-Control": "private, no-transform",
    }
    if download_name:
        safe = download_name.replace('"', "").replace("\\", "")
        common["Content-Disposition"] = f'attachment; filename="{safe}"'

    if_none_match = headers.get("If-None-Match")
    if if_none_match and (if_none_match.strip() == "*" or etag in _split_tags(if_none_match)):
        return Response(status=304, headers=common)

    range_header = headers.get("Range")
    if_range = headers.get("If-Range")
    if range_header and if_range and not _if_range_matches(if_range, etag, stat.st_mtime):
        range_header = None  # the client's copy is stale: send the whole new file
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(
            status=416, headers={**common, "Content-Range": f"bytes */{size}"}, mimetype=mimetype
        )
    if byte_range is None:
        start, length, status = 0, size, 200
        extra: dict[str, str] = {}
    else:
        start, length, status = byte_range.start, byte_range.length, 206
        extra = {"Content-Range": byte_range.content_range()}
    body: Iterator[bytes] | list[bytes]
    body = [] if method.upper() == "HEAD" else iter_file(path, start, length, chunk)
    response = Response(
        body,
        status=status,
        headers={**common, **extra},
        mimetype=mimetype,
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(length)
    return response


def _split_tags(value: str) -> set[str]:
    return {tag.strip() for tag in value.split(",") if tag.strip()}


# --------------------------------------------------------------------------- checksums
def sha256_file(path: str | Path, chunk: int = CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file, read incrementally in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ChecksumCache:
    """SHA-256 digests remembered per (absolute path, size, mtime_ns).

    Kept in memory and, when ``store`` is given, in a small JSON file so that digests
    survive restarts and are shared by several server processes (last writer wins;
    entries are only ever valid for the exact file version they name).
    """

    def __init__(self, store: str | Path | None = None):
        self.store = Path(store) if store else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self.computed = 0
        if self.store and self.store.is_file():
            try:
                self._entries = json.loads(self.store.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._entries = {}

    def sha256(self, path: str | Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = sha256_file(path)
        with self._lock:
            self.computed += 1
            self._entries[key] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": digest,
            }
            self._save()
        return digest

    def _save(self) -> None:
        if not self.store:
            return
        atomic_write(self.store, json.dumps(self._entries))


@dataclass(frozen=True)
class ManifestEntry:
    """One downloadable file: its public name, size (bytes), SHA-256 and mtime (UTC)."""

    name: str
    size: int
    sha256: str
    modified_at: str
    kind: str = ""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "modified_at": self.modified_at,
        }


def build_manifest(
    files: Mapping[str, Path] | list[tuple[str, Path, str]], cache: ChecksumCache
) -> list[ManifestEntry]:
    """Manifest entries for ``{name: path}`` (or ``[(name, path, kind)]``), hashed via cache."""
    items = (
        [(name, path, "") for name, path in files.items()]
        if isinstance(files, Mapping)
        else list(files)
    )
    entries = []
    for name, path, kind in items:
        stat = Path(path).stat()
        entries.append(
            ManifestEntry(
                name=name,
                size=stat.st_size,
                sha256=cache.sha256(path),
                modified_at=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                kind=kind,
            )
        )
    return entries


def manifest_sha256sum(entries: list[ManifestEntry]) -> str:
    """The manifest in ``sha256sum`` format (``sha256sum -c MANIFEST.sha256`` checks it)."""
    return "".join(f"{e.sha256}  {e.name}\n" for e in entries)


# --------------------------------------------------------------------------- signed links
LINK_SALT = "cryofac-download-link/1"


def _serializer(secret: str):
    from itsdangerous import URLSafeSerializer

    return URLSafeSerializer(secret, salt=LINK_SALT)


def make_link_token(
    secret: str,
    *,
    user_id: int,
    session_id: int,
    name: str,
    expires_in_s: int = 24 * 3600,
    now: float | None = None,
) -> tuple[str, datetime]:
    """A signed token for one file of one session, valid for ``expires_in_s`` seconds.

    Returns (token, expiry time in UTC). The token names the user it was issued to,
    so access is re-checked (still a project member?) every time it is used.
    """
    if expires_in_s <= 0:
        raise DownloadLinkError("link lifetime must be positive")
    expires = int((time.time() if now is None else now) + expires_in_s)
    token = _serializer(secret).dumps([int(user_id), int(session_id), str(name), expires])
    return token, datetime.fromtimestamp(expires, UTC)


@dataclass(frozen=True)
class LinkGrant:
    """What a valid signed link grants: a user, a session, a file name, until when."""

    user_id: int
    session_id: int
    name: str
    expires_at: datetime


def read_link_token(secret: str, token: str, now: float | None = None) -> LinkGrant:
    """Verify a signed link; raise :class:`DownloadLinkError` if forged or expired."""
    from itsdangerous import BadData

    try:
        user_id, session_id, name, expires = _serializer(secret).loads(token)
    except (BadData, ValueError, TypeError) as exc:
        raise DownloadLinkError("download link is not valid") from exc
    if (time.time() if now is None else now) >= expires:
        raise DownloadLinkError("download link has expired")
    return LinkGrant(int(user_id), int(session_id), str(name), datetime.fromtimestamp(expires, UTC))

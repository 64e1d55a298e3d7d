"""A small JSON client for the portal's ``/api/v1`` (standard library only).

The demo drives the portal over real HTTP, exactly as a user's script would.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryofac.errors import CryofacError


class PortalHTTPError(CryofacError):
    """The portal answered with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status = status
        self.body = body
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class PortalClient:
    """Talks JSON to ``base_url`` (e.g. ``http://127.0.0.1:5000``)."""

    def __init__(self, base_url: str, timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Response:
        """Send one request; raise :class:`PortalHTTPError` unless the status is expected."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                status, raw, headers = reply.status, reply.read(), dict(reply.headers)
        except urllib.error.HTTPError as exc:
            status, raw, headers = exc.code, exc.read(), dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if status not in expect:
            raise PortalHTTPError(method, path, status, parsed)
        return Response(status, parsed, headers)

    def token(self, username: str, password: str) -> str:
        reply = self.request(
            "POST", "/api/v1/tokens", {"username": username, "password": password}, expect=(201,)
        )
        return reply.body["token"]

    def browser_get(self, username: str, password: str, path: str) -> str:
        """Log in through the HTML form (cookie + CSRF token) and GET ``path`` as a page."""
        import http.cookiejar
        import re
        import urllib.parse

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(self.base_url + "/login", timeout=self.timeout_s) as reply:
            form = reply.read().decode()
        match = re.search(r'name="csrf_token" value="([^"]+)"', form)
        if match is None:
            raise CryofacError("the log-in page has no CSRF token")
        fields = {"csrf_token": match.group(1), "username": username, "password": password}
        data = urllib.parse.urlencode(fields).encode()
        with opener.open(self.base_url + "/login", data=data, timeout=self.timeout_s) as reply:
            reply.read()
        try:
            with opener.open(self.base_url + path, timeout=self.timeout_s) as reply:
                return reply.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise PortalHTTPError("GET", path, exc.code, body) from None

    def download(self, path: str, dest: Path, token: str, chunk_bytes: int = 1 << 20) -> int:
        """Stream ``path`` into ``dest`` (never whole in memory); returns the byte count."""
        request = urllib.request.Request(self.base_url + path)
        request.add_header("Authorization", f"Bearer {token}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            with (
                urllib.request.urlopen(request, timeout=self.timeout_s) as reply,
                open(partial, "wb") as handle,
            ):
                shutil.copyfileobj(reply, handle, chunk_bytes)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise PortalHTTPError("GET", path, exc.code, body) from None
        partial.replace(dest)
        return dest.stat().st_size

"""Glue between sessions in the database and the files of their run folders.

Used by the JSON API (``portal.api.files``) and the browser views
(``portal.views.downloads``): find a session the user may see (404 otherwise), list
its downloadable files — run outputs, the environmental provenance and a manifest
with SHA-256 checksums — and stream one of them with HTTP Range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app, url_for

from cryofac.fileio import atomic_write
from portal.downloads import (
    ChecksumCache,
    build_manifest,
    file_response,
    make_link_token,
    manifest_sha256sum,
)
from portal.links import external_url
from portal.runs.files import (
    ENVIRONMENT_NAME,
    MANIFEST_NAME,
    SHA256SUM_NAME,
    find_file,
    media_type,
    run_files,
)
from portal.runs.folder import RunFolder, RunFolderError, run_cache

LINK_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Downloadable:
    """A file offered for download: public name, path on disk, label, kind."""

    name: str
    path: Path
    label: str
    kind: str

    @property
    def size(self) -> int | None:
        """Bytes, or None for a manifest that is built on request."""
        return self.path.stat().st_size if self.path.exists() else None

    def as_dict(self, session_id: int) -> dict[str, Any]:
        exists = self.path.exists()
        stat = self.path.stat() if exists else None
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "size": stat.st_size if stat else None,
            "modified_at": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat() if stat else None,
            "url": url_for("api_files.get_file", session_id=session_id, name=self.name),
        }


def cache_dir() -> Path:
    """Where the portal keeps generated files (manifests, provenance, checksum cache)."""
    configured = current_app.config.get("DOWNLOAD_CACHE_DIR")
    path = Path(configured) if configured else Path(current_app.instance_path) / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checksum_cache() -> ChecksumCache:
    cache = current_app.extensions.get("cryofac.checksums")
    if cache is None:
        cache = ChecksumCache(cache_dir() / "sha256.json")
        current_app.extensions["cryofac.checksums"] = cache
    return cache


def load_run(session) -> RunFolder | None:
    """The session's run folder, or None when it has none (yet) or it cannot be read."""
    if not session.run_dir:
        return None
    try:
        return run_cache.get(session.run_dir)
    except RunFolderError as exc:
        current_app.logger.warning("session %s: %s", session.id, exc)
        return None


def _write_if_changed(path: Path, data: bytes) -> Path:
    """Write ``data`` atomically unless the file already holds it (keeps ETags stable)."""
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    return atomic_write(path, data)


def environment_provenance(session) -> dict[str, Any] | None:
    """The session's environmental provenance from instrument_env (None if unavailable).

    Computed over the acquisition window (start to end, or to now while acquiring) inside
    a savepoint that is rolled back, so a missing table or a failure never poisons the
    request's transaction.
    """
    try:
        from instrument_env.provenance import summarize
        from portal.facility import env_config
    except ImportError:
        return None
    if session.started_at is None:
        return None
    from portal.db import get_db

    db = get_db()
    end = session.ended_at or datetime.now(UTC)
    savepoint = db.begin_nested()
    try:
        return summarize(db, session.instrument_id, session.started_at, end, config=env_config())
    except Exception as exc:  # provenance is an extra; never break the download list
        current_app.logger.warning("session %s: no provenance: %s", session.id, exc)
        return None
    finally:
        savepoint.rollback()


#: While a session is still acquiring, its provenance is recomputed at most this often (s).
PROVENANCE_REFRESH_S = 300.0


def _environment_file(session, folder: Path) -> Path | None:
    """``environment.json`` of the session, recomputed only when it may have changed.

    Once the session has ended the file is written once; while it runs, at most every
    :data:`PROVENANCE_REFRESH_S` seconds (a 72 h window is many readings to summarise).
    """
    path = folder / ENVIRONMENT_NAME
    checked = folder / ".environment.checked"  # when it was last recomputed
    if path.exists() and checked.exists():
        at = datetime.fromtimestamp(checked.stat().st_mtime, UTC)
        if session.ended_at is not None and at > session.ended_at:
            return path
        age_s = (datetime.now(UTC) - at).total_seconds()
        if session.ended_at is None and age_s < PROVENANCE_REFRESH_S:
            return path
    provenance = environment_provenance(session)
    if provenance is None:
        return path if path.exists() else None
    data = json.dumps(provenance, indent=2, sort_keys=True, default=str).encode()
    _write_if_changed(path, data)  # unchanged content keeps its ETag (resumable)
    checked.touch()
    return path


def downloadables(session, build_manifest_now: bool = False) -> list[Downloadable]:
    """Every file of ``session`` offered for download, manifest last.

    Listing hashes nothing: the manifest (SHA-256 of every file, incrementally, cached per
    file version) is built when it is requested (``build_manifest_now``), so a page with
    multi-GB maps renders at once. Until then the manifest entries point at files that
    may not exist yet (size unknown).
    """
    run = load_run(session)
    items = [Downloadable(f.name, f.path, f.label, f.key) for f in (run_files(run) if run else [])]
    folder = cache_dir() / f"session_{session.id}"
    folder.mkdir(parents=True, exist_ok=True)
    environment = _environment_file(session, folder)
    if environment is not None:
        items.append(
            Downloadable(ENVIRONMENT_NAME, environment, "Environmental provenance", "environment")
        )
    if not items:
        return []
    manifest_path, sums_path = folder / MANIFEST_NAME, folder / SHA256SUM_NAME
    if build_manifest_now:
        entries = build_manifest([(i.name, i.path, i.kind) for i in items], checksum_cache())
        manifest = {
            "schema": "cryofac-manifest/1",
            "session_id": session.id,
            "project_id": session.project_id,
            "instrument_id": session.instrument_id,
            "files": [e.as_dict() for e in entries],
        }
        _write_if_changed(manifest_path, json.dumps(manifest, indent=2).encode())
        _write_if_changed(sums_path, manifest_sha256sum(entries).encode())
    items.append(Downloadable(MANIFEST_NAME, manifest_path, "Manifest with checksums", "manifest"))
    items.append(Downloadable(SHA256SUM_NAME, sums_path, "Checksums (sha256sum -c)", "manifest"))
    return items


def find_downloadable(session, name: str) -> Downloadable | None:
    """The downloadable called ``name``; a manifest is (re)built only when it is asked for."""
    if name not in (ENVIRONMENT_NAME, MANIFEST_NAME, SHA256SUM_NAME):
        run = load_run(session)
        found = find_file(run, name) if run else None
        return Downloadable(found.name, found.path, found.label, found.key) if found else None
    build = name in (MANIFEST_NAME, SHA256SUM_NAME)
    for item in downloadables(session, build_manifest_now=build):
        if item.name == name:
            return item
    return None


def stream(session, item: Downloadable, request, user=None, via: str = "browser"):
    """Stream ``item`` for ``request`` (Range, conditional requests, HEAD).

    A GET by ``user`` is written to the audit log (file, range asked for, ``via``:
    browser, api or link) and committed before the first byte is sent.
    """
    if user is not None and request.method == "GET":
        from portal.db import get_db
        from portal.domain import audit

        db = get_db()
        audit.record(
            db,
            user,
            "download",
            "session",
            session.id,
            after={"file": item.name, "range": request.headers.get("Range", "")[:100], "via": via},
        )
        db.commit()
    return file_response(
        item.path,
        request.headers,
        method=request.method,
        download_name=f"session{session.id}_{item.name}",
        mimetype=media_type(item.name),
    )


def signed_link(user_id: int, session_id: int, name: str) -> tuple[str, datetime]:
    """An absolute URL for ``name`` that works without a login until it expires."""
    ttl = int(current_app.config.get("DOWNLOAD_LINK_TTL_S", LINK_TTL_S))
    token, expires = make_link_token(
        current_app.config["SECRET_KEY"],
        user_id=user_id,
        session_id=session_id,
        name=name,
        expires_in_s=ttl,
    )
    return external_url("downloads.signed_download", token=token), expires


def audit_link(session, name: str, expires: datetime, user) -> None:
    """Record (and commit) that ``user`` made a signed link to ``name`` of ``session``."""
    from portal.db import get_db
    from portal.domain import audit

    db = get_db()
    audit.record(
        db, user, "create_link", "session", session.id, after={"file": name, "expires_at": expires}
    )
    db.commit()

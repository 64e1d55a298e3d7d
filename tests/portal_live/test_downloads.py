"""Range streaming, checksums and signed links (pure, no app)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from portal.downloads import (
    ChecksumCache,
    DownloadLinkError,
    RangeNotSatisfiable,
    build_manifest,
    file_response,
    iter_file,
    make_link_token,
    manifest_sha256sum,
    parse_range,
    read_link_token,
)

GiB = 1 << 30


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes = 5 - 6", (5, 6)),
        ("bytes=0-1,5-6", None),  # multiple ranges: whole file
        ("items=0-5", None),  # not bytes: ignored
        ("bytes=9-3", None),  # invalid: ignored
    ],
)
def test_parse_range(header, expected):
    result = parse_range(header, 1000)
    assert (None if result is None else (result.start, result.end)) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def _body(response) -> bytes:
    return b"".join(response.response)


def test_file_response_statuses_and_headers(tmp_path):
    path = tmp_path / "map.mrc"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)
    full = file_response(path, {}, download_name="map.mrc")
    assert full.status_code == 200
    assert full.headers["Accept-Ranges"] == "bytes"
    assert full.headers["Content-Length"] == str(len(data))
    assert 'filename="map.mrc"' in full.headers["Content-Disposition"]
    assert _body(full) == data
    etag = full.headers["ETag"]

    part = file_response(path, {"Range": "bytes=1000-2047"}, chunk=100)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-2047/{len(data)}"
    assert part.headers["Content-Length"] == "1048"
    assert _body(part) == data[1000:2048]

    tail = file_response(path, {"Range": "bytes=-17"})
    assert _body(tail) == data[-17:]

    bad = file_response(path, {"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416
    assert bad.headers["Content-Range"] == f"bytes */{len(data)}"

    assert file_response(path, {"If-None-Match": etag}).status_code == 304
    # If-Range with the current ETag honours the range; a stale one sends everything.
    assert file_response(path, {"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    stale = file_response(path, {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and _body(stale) == data

    head = file_response(path, {}, method="HEAD")
    assert head.headers["Content-Length"] == str(len(data)) and _body(head) == b""


def test_two_gib_sparse_file_resume_headers_and_bounded_memory(tmp_path):
    """A 2 GiB file: 256 MiB, 'connection lost', resume with Range; the resumed body starts
    at the right byte, the tail is right, and the heap holds only a few chunks.

    The full 2 GiB transfer over HTTP with curl is ``test_download_http.py``.
    """
    path = tmp_path / "big_map.mrc"
    size = 2 * GiB
    markers = {0: b"HEAD", 256 * (1 << 20): b"RSUM", size - 4: b"TAIL"}
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, marker in markers.items():
            handle.seek(offset)
            handle.write(marker)
    assert os.stat(path).st_blocks * 512 < 1 << 20  # really sparse on disk

    tracemalloc.start()
    try:
        first = file_response(path, {})
        assert first.status_code == 200 and first.headers["Content-Length"] == str(size)
        received = 0
        head = b""
        body = iter(first.response)
        for chunk in body:
            head = head or chunk[:4]
            received += len(chunk)
            if received >= 256 * (1 << 20):
                break
        body.close()  # client went away: the generator closes the file
        assert head == b"HEAD"

        resume = file_response(
            path, {"Range": f"bytes={received}-", "If-Range": first.headers["ETag"]}
        )
        assert resume.status_code == 206
        assert resume.headers["Content-Range"] == f"bytes {received}-{size - 1}/{size}"
        assert resume.headers["Content-Length"] == str(size - received)
        resumed = iter(resume.response)
        assert next(resumed)[:4] == b"RSUM"
        for _, chunk in zip(range(63), resumed, strict=False):  # 64 MiB more
            assert len(chunk) <= 1 << 20
        resumed.close()
        tail = file_response(path, {"Range": "bytes=-4"})
        assert b"".join(tail.response) == b"TAIL"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak Python memory {peak / 2**20:.1f} MiB"


def test_iter_file_stops_when_file_shrinks(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    chunks = list(iter_file(path, 90, 50, chunk=4))
    assert b"".join(chunks) == b"x" * 10


def test_manifest_checksums_are_correct_and_cached(tmp_path):
    a, b = tmp_path / "map.mrc", tmp_path / "fsc.star"
    a.write_bytes(os.urandom(5000))
    b.write_text("data_fsc\n")
    store = tmp_path / "cache" / "sha256.json"
    cache = ChecksumCache(store)
    entries = build_manifest({"map.mrc": a, "fsc.star": b}, cache)
    assert entries[0].sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    assert entries[0].size == 5000
    assert cache.computed == 2
    build_manifest({"map.mrc": a}, cache)
    assert cache.computed == 2  # cached
    # a new process reads the cache from disk
    assert ChecksumCache(store).sha256(a) == entries[0].sha256
    # the file changes: recomputed
    a.write_bytes(b"new")
    os.utime(a, ns=(1, 1))
    assert cache.sha256(a) == hashlib.sha256(b"new").hexdigest()
    text = manifest_sha256sum(entries)
    assert text.splitlines()[1] == f"{entries[1].sha256}  fsc.star"


def test_signed_links_expire_and_resist_tampering():
    token, expires = make_link_token(
        "s3cret", user_id=7, session_id=3, name="map.mrc", expires_in_s=600, now=1_000_000
    )
    grant = read_link_token("s3cret", token, now=1_000_000 + 599)
    assert (grant.user_id, grant.session_id, grant.name) == (7, 3, "map.mrc")
    assert expires.timestamp() == 1_000_600
    with pytest.raises(DownloadLinkError, match="expired"):
        read_link_token("s3cret", token, now=1_000_600)
    with pytest.raises(DownloadLinkError, match="not valid"):
        read_link_token("other-secret", token, now=1_000_000)
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(DownloadLinkError, match="not valid"):
        read_link_token("s3cret", forged, now=1_000_000)
    with pytest.raises(DownloadLinkError):
        make_link_token("s3cret", user_id=1, session_id=1, name="x", expires_in_s=0)

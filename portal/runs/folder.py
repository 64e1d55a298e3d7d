"""Read a processing-run folder (written by ``workflows/``) into plain dataclasses.

The run-folder contract: ``OUT/summary.json`` (schema ``cryofac-run-summary/1``,
written atomically), ``OUT/movies.tsv`` (one row per movie, tab-separated, header
row), optional ``OUT/thumbnails/<stem>_mic.png`` / ``<stem>_ps.png``, and the output
files named in ``summary["outputs"]`` (paths relative to OUT).

Nothing here imports Flask; every function takes a path and returns data or raises
:class:`RunFolderError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryofac.errors import CryofacError
from cryofac.run_folder import OUTPUT_KEYS, RUN_STATES, SUMMARY_SCHEMA

log = logging.getLogger(__name__)


class RunFolderError(CryofacError):
    """A run folder is missing or one of its files is malformed."""


def parse_iso(value: str | None, where: str = "") -> datetime | None:
    """Parse an ISO 8601 timestamp; naive values are taken as UTC. ``None``/"" -> None."""
    if value is None or value == "":
        return None
    try:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RunFolderError(f"{where}: not an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if text == "" or text.lower() in {"nan", "na", "none", "null", "-"}:
        return None
    result = float(text)
    return None if math.isnan(result) else result


def _int(value: str | None) -> int | None:
    result = _float(value)
    return None if result is None else int(result)


@dataclass(frozen=True)
class MovieStats:
    """One row of ``movies.tsv``: per-movie processing statistics (Å, degrees)."""

    movie: str
    batch: str | None  # the workflow's batch label, e.g. "b00012"
    status: str
    total_motion_A: float | None
    early_motion_A: float | None
    late_motion_A: float | None
    defocus_u_A: float | None
    defocus_v_A: float | None
    defocus_angle_deg: float | None
    astigmatism_A: float | None
    ctf_max_resolution_A: float | None
    ctf_fom: float | None
    n_particles: int | None
    processed_at: datetime | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stem(self) -> str:
        name = Path(self.movie).name
        for suffix in (".mrcs", ".mrc", ".tiff", ".tif", ".eer"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return Path(name).stem

    @property
    def defocus_mean_A(self) -> float | None:
        if self.defocus_u_A is None or self.defocus_v_A is None:
            return None
        return 0.5 * (self.defocus_u_A + self.defocus_v_A)


@dataclass(frozen=True)
class RunSummary:
    """The contents of ``summary.json`` (counts, rates per hour, resolution in Å)."""

    state: str
    updated_at: datetime | None
    raw_dir: str
    movies_seen: int
    movies_processed: int
    movies_failed: int
    particles: int
    batches_done: int
    batches_total: int
    first_movie_at: datetime | None
    last_movie_at: datetime | None
    acquisition_rate_per_h: float | None
    processing_rate_per_h: float | None
    resolution_A: float | None
    b_factor: float | None
    outputs: dict[str, str | None] = field(default_factory=dict)
    #: plain-language warnings about the map from the reconstruction (``result.json``)
    warnings: tuple[str, ...] = ()
    per_movie: str = "movies.tsv"
    thumbnails: str = "thumbnails/"
    log: str | None = None
    #: the workflow's own verdict (``summary["keeping_up"]``: from its backlog and the last
    #: 30 minutes' acquisition and processing rates, :func:`workflows.summary.keeping_up`),
    #: if written
    reported_keeping_up: bool | None = None

    @property
    def keeping_up(self) -> bool | None:
        """Whether processing keeps pace with acquisition (None when unknown).

        The workflow's verdict when the summary has one (it knows its batch size).
        Otherwise:

        A run keeps up when its processing rate is at least 90 % of the acquisition
        rate, or when the backlog (seen − processed − failed) is under one batch'
        worth of a few movies, i.e. it has caught up.
        """
        if self.reported_keeping_up is not None:
            return self.reported_keeping_up
        backlog = self.movies_seen - self.movies_processed - self.movies_failed
        if backlog <= 2:
            return True
        acq, proc = self.acquisition_rate_per_h, self.processing_rate_per_h
        if acq is None or proc is None or acq <= 0:
            return None
        return proc >= 0.9 * acq

    def stalled(self, now: datetime, after_s: float = 900.0) -> bool:
        """True when a *running* run has not updated its summary for ``after_s`` seconds
        (the workflow died or hangs): the summary is rewritten after every batch."""
        if self.state != "running" or self.updated_at is None:
            return False
        return (now - self.updated_at).total_seconds() > after_s

    @property
    def backlog(self) -> int:
        return max(0, self.movies_seen - self.movies_processed - self.movies_failed)


@dataclass
class RunFolder:
    """A run folder on disk with its summary and per-movie statistics."""

    path: Path
    summary: RunSummary
    movies: list[MovieStats]

    def output_path(self, key: str) -> Path | None:
        """Absolute path of an output (``map``, ``fsc_star``…) if named and present.

        Paths that would leave the run folder are refused (``None``).
        """
        rel = self.summary.outputs.get(key)
        if not rel:
            return None
        return safe_join(self.path, rel)

    def latest_thumbnails(self) -> tuple[Path | None, Path | None]:
        """(micrograph PNG, power-spectrum PNG) of the latest processed movie that has them."""
        thumbs = safe_join(self.path, self.summary.thumbnails or "thumbnails/", must_exist=False)
        if thumbs is None or not thumbs.is_dir():
            return None, None
        ordered = sorted(
            (m for m in self.movies if m.ok),
            key=lambda m: (m.processed_at or datetime.min.replace(tzinfo=UTC), m.movie),
            reverse=True,
        )
        base = thumbs.relative_to(self.path.resolve())
        for movie in ordered:
            # each file passes the same check as every served file: a symlink (or a
            # stem with "..") that leads outside the run folder is not served
            mic = self.served_path(str(base / f"{movie.stem}_mic.png"))
            ps = self.served_path(str(base / f"{movie.stem}_ps.png"))
            if mic is not None or ps is not None:
                return mic, ps
        return None, None

    def served_path(self, relative: str) -> Path | None:
        """The regular file ``relative`` under the run folder, resolved (symlinks
        followed), or None when it is missing or leads outside the folder."""
        path = safe_join(self.path, relative)
        return path if path is not None and path.is_file() else None

    def mtime(self) -> float:
        """Latest modification time (s since epoch) of summary.json and movies.tsv."""
        times = [
            p.stat().st_mtime
            for p in (self.path / "summary.json", self.path / self.summary.per_movie)
            if p.exists()
        ]
        return max(times, default=0.0)


def safe_join(root: Path, relative: str, must_exist: bool = True) -> Path | None:
    """``root / relative`` resolved, or None if it escapes ``root`` (or is missing)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        return None
    if must_exist and not candidate.exists():
        return None
    return candidate


def _count(data: dict, key: str, where: str) -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunFolderError(f"{where}: {key} must be a number, got {value!r}")
    return int(value)


def _number(data: dict, key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunFolderError(f"{where}: {key} must be a number or null, got {value!r}")
    return float(value)


def read_summary(path: str | Path) -> RunSummary:
    """Read ``summary.json`` (the file itself, or the run folder containing it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunFolderError(f"{where}: no run summary yet") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{where}: unreadable run summary ({exc})") from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{where}: expected a JSON object")
    schema = data.get("schema")
    if schema != SUMMARY_SCHEMA:
        raise RunFolderError(f"{where}: schema is {schema!r}, expected {SUMMARY_SCHEMA!r}")
    state = data.get("state")
    if state not in RUN_STATES:
        raise RunFolderError(f"{where}: state {state!r} is not one of {', '.join(RUN_STATES)}")
    outputs_raw = data.get("outputs") or {}
    if not isinstance(outputs_raw, dict):
        raise RunFolderError(f"{where}: outputs must be an object")
    outputs = {key: outputs_raw.get(key) for key in OUTPUT_KEYS}
    for key, value in outputs_raw.items():
        if key not in outputs:
            outputs[key] = value
    return RunSummary(
        state=state,
        updated_at=parse_iso(data.get("updated_at"), f"{where}: updated_at"),
        raw_dir=str(data.get("raw_dir") or ""),
        movies_seen=_count(data, "movies_seen", where),
        movies_processed=_count(data, "movies_processed", where),
        movies_failed=_count(data, "movies_failed", where),
        particles=_count(data, "particles", where),
        batches_done=_count(data, "batches_done", where),
        batches_total=_count(data, "batches_total", where),
        first_movie_at=parse_iso(data.get("first_movie_at"), f"{where}: first_movie_at"),
        last_movie_at=parse_iso(data.get("last_movie_at"), f"{where}: last_movie_at"),
        acquisition_rate_per_h=_number(data, "acquisition_rate_per_h", where),
        processing_rate_per_h=_number(data, "processing_rate_per_h", where),
        resolution_A=_number(data, "resolution_A", where),
        b_factor=_number(data, "b_factor", where),
        outputs=outputs,
        warnings=_strings(data, "warnings", where),
        per_movie=str(data.get("per_movie") or "movies.tsv"),
        thumbnails=str(data.get("thumbnails") or "thumbnails/"),
        log=data.get("log"),
        reported_keeping_up=(
            data.get("keeping_up") if isinstance(data.get("keeping_up"), bool) else None
        ),
    )


def _strings(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RunFolderError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def read_movies(path: str | Path) -> list[MovieStats]:
    """Read ``movies.tsv``; a missing file is an empty run (no movies processed yet).

    A row with an unparsable value is skipped with a logged warning naming the line; a
    table without its ``movie``/``status`` columns is an error.
    """
    path = Path(path)
    if not path.exists():
        return []
    movies: list[MovieStats] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            header = reader.fieldnames or []
            missing = [c for c in ("movie", "status") if c not in header]
            if missing:
                raise RunFolderError(f"{path}: missing column(s) {', '.join(missing)}")
            for line_no, row in enumerate(reader, start=2):
                if not row.get("movie"):
                    continue
                try:
                    movies.append(
                        MovieStats(
                            movie=row["movie"],
                            batch=(row.get("batch") or "").strip() or None,
                            status=(row.get("status") or "").strip() or "ok",
                            total_motion_A=_float(row.get("total_motion_A")),
                            early_motion_A=_float(row.get("early_motion_A")),
                            late_motion_A=_float(row.get("late_motion_A")),
                            defocus_u_A=_float(row.get("defocus_u_A")),
                            defocus_v_A=_float(row.get("defocus_v_A")),
                            defocus_angle_deg=_float(row.get("defocus_angle_deg")),
                            astigmatism_A=_float(row.get("astigmatism_A")),
                            ctf_max_resolution_A=_float(row.get("ctf_max_resolution_A")),
                            ctf_fom=_float(row.get("ctf_fom")),
                            n_particles=_int(row.get("n_particles")),
                            processed_at=parse_iso(row.get("processed_at"), f"{path}:{line_no}"),
                        )
                    )
                except (ValueError, RunFolderError) as exc:
                    # One garbled row must not hide the rest of a live run: skip it, say where.
                    log.warning("%s:%d: row skipped (%s)", path, line_no, exc)
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from exc
    return movies


def read_run(path: str | Path) -> RunFolder:
    """Read a whole run folder (summary and per-movie table)."""
    root = Path(path)
    if not root.is_dir():
        raise RunFolderError(f"{root}: run folder does not exist")
    summary = read_summary(root / "summary.json")
    per_movie = safe_join(root, summary.per_movie, must_exist=False)
    movies = read_movies(per_movie) if per_movie is not None else []
    return RunFolder(path=root.resolve(), summary=summary, movies=movies)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class RunCache:
    """Run folders read once per version of their files (keyed by mtime and size).

    A 50,000-movie ``movies.tsv`` takes about a second to parse; a live page polled
    every few seconds by several viewers must not parse it each time.
    """

    def __init__(self, max_entries: int = 64):
        import threading
        from collections import OrderedDict

        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[tuple, RunFolder]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0

    def get(self, path: str | Path) -> RunFolder:
        """The run folder at ``path`` (read again only when summary.json or its table changed)."""
        root = Path(path).resolve()
        summary_stamp = _stamp(root / "summary.json")
        with self._lock:
            cached = self._entries.get(str(root))
        if cached is not None and summary_stamp is not None:
            key, run = cached
            if key == (summary_stamp, _stamp(root / run.summary.per_movie)):
                with self._lock:
                    self._entries.move_to_end(str(root))
                return run
        run = read_run(root)
        key = (summary_stamp, _stamp(root / run.summary.per_movie))
        with self._lock:
            self.reads += 1
            self._entries[str(root)] = (key, run)
            self._entries.move_to_end(str(root))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return run


#: Process-wide cache used by the web views.
run_cache = RunCache()


def read_fsc(path: str | Path) -> list[tuple[float, float]]:
    """(resolution in 1/Å, FSC) pairs from a RELION ``fsc.star`` (``rlnResolution``,
    ``rlnFourierShellCorrelation``), sorted by spatial frequency."""
    import starfile

    path = Path(path)
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise RunFolderError(f"{path}: unreadable FSC STAR file ({exc})") from exc
    for table in data.values():
        if hasattr(table, "columns") and "rlnFourierShellCorrelation" in table.columns:
            if "rlnResolution" in table.columns:
                freq = table["rlnResolution"].astype(float).tolist()
            elif "rlnAngstromResolution" in table.columns:
                freq = [1.0 / a if a else 0.0 for a in table["rlnAngstromResolution"]]
            else:
                break
            fsc = table["rlnFourierShellCorrelation"].astype(float).tolist()
            return sorted(zip(freq, fsc, strict=True))
    raise RunFolderError(f"{path}: no rlnResolution / rlnFourierShellCorrelation columns")


def fsc_resolution_A(curve: list[tuple[float, float]], threshold: float = 0.143) -> float | None:
    """Resolution (Å) where the FSC first drops below ``threshold`` (linear interpolation)."""
    for (f0, c0), (f1, c1) in zip(curve, curve[1:], strict=False):
        if c0 >= threshold > c1 and f1 > 0:
            freq = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
            return 1.0 / freq if freq > 0 else None
    return None


@dataclass(frozen=True)
class ClassAverage:
    """One 2D class: index (1-based), particle count and image (2D float array)."""

    index: int
    n_particles: int | None
    image: object


def read_classes2d(path: str | Path, max_classes: int = 200) -> list[ClassAverage]:
    """2D class averages from an ``.mrcs`` stack, with counts from a sibling STAR.

    Counts come from ``<stack>.star`` / ``<stem>_model.star`` / ``<stem>.star`` if one has
    ``rlnClassNumber`` with ``rlnClassParticleCount`` (or ``rlnClassDistribution`` with
    ``rlnNrOfParticles``); classes are returned sorted by count, largest first.
    """
    import mrcfile
    import numpy as np

    path = Path(path)
    if path.is_dir():
        stacks = sorted(path.glob("*.mrcs")) or sorted(path.glob("*.mrc"))
        if not stacks:
            raise RunFolderError(f"{path}: no class-average stack (.mrcs)")
        path = stacks[0]
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            data = np.asarray(mrc.data)
            images = data[None] if data.ndim == 2 else data[:max_classes]
            images = np.array(images, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable class averages ({exc})") from exc
    counts = _class_counts(path, len(images))
    classes = [ClassAverage(i + 1, counts.get(i + 1), images[i]) for i in range(len(images))]
    classes.sort(key=lambda c: (-(c.n_particles or 0), c.index))
    return classes


def _class_counts(stack: Path, n: int) -> dict[int, int]:
    import starfile

    stem = stack.name.rsplit(".", 1)[0]
    for candidate in (
        stack.with_name(stack.name + ".star"),
        stack.with_name(f"{stem}_model.star"),
        stack.with_name(f"{stem}.star"),
        stack.with_name("classes.star"),
    ):
        if not candidate.is_file():
            continue
        try:
            tables = starfile.read(candidate, always_dict=True)
        except Exception:
            continue
        for table in tables.values():
            cols = getattr(table, "columns", [])
            if "rlnClassParticleCount" in cols:
                if "rlnClassNumber" in cols:
                    idx = table["rlnClassNumber"].astype(int).tolist()
                else:
                    idx = list(range(1, len(table) + 1))
                return dict(zip(idx, table["rlnClassParticleCount"].astype(int), strict=True))
            if "rlnClassDistribution" in cols and "rlnNrOfParticles" in cols:
                total = float(table["rlnNrOfParticles"].iloc[0])
                dist = table["rlnClassDistribution"].astype(float).tolist()
                return {i + 1: int(round(d * total)) for i, d in enumerate(dist)}
    return {}

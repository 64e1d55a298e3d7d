"""The steps of ``cryofac demo`` (see :mod:`cryofac.demo` for the story)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from cryofac.errors import CryofacError

PASSWORD = "cryofac-demo"
MARKER = ".cryofac-demo"


@dataclass(frozen=True)
class Settings:
    """Sizes of the simulated acquisition and of its processing."""

    movies: int
    movie_shape: tuple[int, int]
    n_frames: int
    pixel_size_A: float
    dose_per_frame: float
    particles_per_movie: int
    interval_s: float
    batch_size: int
    min_particles: int
    box_px: int
    extract_bin: int
    symmetry: str
    seed: int
    history_h: float = 3.0
    watch_interval_s: float = 5.0
    workflow_overrides: dict[str, Any] = field(default_factory=dict)

    def acquisition(self) -> dict[str, Any]:
        """The settings :func:`pipeline.simulate.simulate_acquisition` takes, by its names."""
        return {name: getattr(self, name) for name in _ACQUISITION_SETTINGS}


#: Settings fields named as simulate_acquisition's keyword arguments
_ACQUISITION_SETTINGS = (
    "movie_shape",
    "n_frames",
    "pixel_size_A",
    "dose_per_frame",
    "particles_per_movie",
    "interval_s",
    "seed",
)


PRESETS: dict[str, Settings] = {
    # Minutes on 2 cores: 16 small movies of apoferritin (octahedral) at 1.5 Å/pixel.
    "fast": Settings(
        movies=16,
        movie_shape=(1024, 1024),
        n_frames=16,
        pixel_size_A=1.5,
        dose_per_frame=2.5,
        particles_per_movie=40,
        interval_s=2.0,
        batch_size=4,
        min_particles=300,
        box_px=128,
        extract_bin=2,
        symmetry="O",
        seed=7,
    ),
    # Closer to a real session, still on one machine: 48 movies at 1.06 Å/pixel.
    "full": Settings(
        movies=48,
        movie_shape=(2048, 2048),
        n_frames=30,
        pixel_size_A=1.06,
        dose_per_frame=1.33,
        particles_per_movie=120,
        interval_s=10.0,
        batch_size=8,
        min_particles=2000,
        box_px=160,
        extract_bin=2,
        symmetry="O",
        seed=7,
    ),
}


def preset(name: str, movies: int | None = None, seed: int | None = None) -> Settings:
    """The named preset, with ``movies`` and ``seed`` overridden when given."""
    settings = PRESETS[name]
    if movies is not None:
        settings = replace(settings, movies=movies)
    if seed is not None:
        settings = replace(settings, seed=seed)
    return settings


def say(step: str, message: str = "") -> None:
    click.secho(f"==> {step}", bold=True, err=False)
    if message:
        click.echo(f"    {message}")


def note(message: str) -> None:
    click.echo(f"    {message}")


class Demo:
    """One run of the demo in ``workdir``."""

    def __init__(
        self, workdir: Path, settings: Settings, *, host: str, port: int, fresh: bool = False
    ):
        self.workdir = workdir.resolve()
        self.settings = settings
        self.host = host
        self.port = port
        self.fresh = fresh
        self.url = ""
        self.results: dict[str, Any] = {}

    # -- orchestration -------------------------------------------------------------
    def run(self, serve: bool = True) -> dict[str, Any]:
        t0 = time.monotonic()
        self._prepare_folder()
        self._start_microscope()
        self._database()
        self._environment_history()
        server = self._start_portal()
        worker = self._start_worker()
        feed = self._start_live_feed()
        monitor = self._start_monitor(feed)
        try:
            session_id = self._bookings()
            self._gate_and_start(session_id)
            self._acquire_and_process(session_id)
            self._provenance(session_id)
            self._download(session_id)
            self._notices(session_id)
        finally:
            # on Ctrl-C, SIGTERM or an error, stop within seconds: the feed is a daemon
            # thread, so a post still in flight is not waited for
            failing = sys.exc_info()[0] is not None
            self.microscope.stop(grace_s=2.0 if failing else 5.0)
            feed.stop(timeout_s=2.0 if failing else None)
            self.results["env_readings_posted"] = feed.posted
            if feed.errors:
                note(f"environment feed errors: {feed.errors[-1]} ({len(feed.errors)} in all)")
        self.results["wall_s"] = round(time.monotonic() - t0, 1)
        (self.workdir / "demo-result.json").write_text(json.dumps(self.results, indent=2) + "\n")
        self._banner(finished=True)
        if serve:
            say("Serving the portal; press Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                note("stopping")
        server.shutdown()
        from cryofac.demo.environment import stop_monitor

        stop_monitor(monitor)
        worker.terminate()
        worker.wait(30)
        return self.results

    def _start_worker(self) -> subprocess.Popen:
        """``cryofac portal worker``: delivers the notification outbox (to its log, no
        SMTP server here) and runs the periodic jobs (finished runs, alarms)."""
        command = [sys.executable, "-m", "cryofac.cli", "portal", "worker"]
        command += ["--database-url", self.database_url, "--poll-s", "1", "--jobs-every-s", "5"]
        command += ["--no-evaluate-alarms"]  # `cryofac env monitor` evaluates them
        from workflows.control import die_with_this_process

        with open(self.workdir / "worker.log", "w") as log:
            worker = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_this_process()
            )
        note(f"notification worker running (log: {self.workdir / 'worker.log'})")
        return worker

    def _notices(self, session_id: int, wait_s: float = 60.0) -> None:
        """Wait for the worker to deliver the run-finished notice; record what it sent."""
        import sqlalchemy as sa

        from portal.models import OutboxMessage

        deadline = time.monotonic() + wait_s
        while True:
            with self.sessionmaker() as db:
                rows = db.execute(sa.select(OutboxMessage.kind, OutboxMessage.status)).all()
            finished = [r for r in rows if r.kind == "run_complete" and r.status != "pending"]
            if finished or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        kinds = sorted({f"{kind}: {status}" for kind, status in rows})
        self.results["notices"] = {
            k: sum(f"{r.kind}: {r.status}" == k for r in rows) for k in kinds
        }
        say("Notifications", ", ".join(f"{k} ×{n}" for k, n in self.results["notices"].items()))

    # -- 1. database ---------------------------------------------------------------
    def _prepare_folder(self) -> None:
        if self.workdir.exists() and any(self.workdir.iterdir()):
            if not (self.workdir / MARKER).exists():
                raise CryofacError(
                    f"{self.workdir} exists and was not made by cryofac demo; choose another --dir"
                )
            if not self.fresh:
                raise CryofacError(
                    f"{self.workdir} holds an earlier demo; add --fresh to replace it "
                    "or choose another --dir"
                )
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / MARKER).write_text("made by cryofac demo\n")
        self.database_url = f"sqlite:///{self.workdir / 'cryofac.sqlite3'}"

    def _database(self) -> None:
        from portal import create_app
        from portal.cli import load_facility, upgrade_all

        say("Creating the database and the facility", self.database_url)
        upgrade_all(self.database_url)
        self.app = create_app(
            {
                "DATABASE_URL": self.database_url,
                "SECRET_KEY": secrets.token_hex(32),
                # demo passwords are known; keep hashing cheap so log-ins are instant
                "PASSWORD_TIME_COST": 1,
                "PASSWORD_MEMORY_KIB": 8192,
            }
        )
        rooms, instruments = load_facility(self.app, None)
        from portal.demo import seed

        with self.app.extensions["cryofac.sessionmaker"]() as db:
            users = seed(db, self.app.extensions["cryofac.hasher"], PASSWORD)
            db.commit()
        self.sessionmaker = self.app.extensions["cryofac.sessionmaker"]
        note(f"{rooms} rooms, {instruments} instruments; users: {', '.join(users)}")

    # -- 2. environment history ----------------------------------------------------
    def _environment_history(self) -> None:
        from cryofac.demo.environment import ac_fault, replay_history
        from instrument_env.db import session_factory

        now = datetime.now(UTC).replace(microsecond=0)
        hours = self.settings.history_h
        start = now - timedelta(hours=hours)
        self.fault = ac_fault(start + timedelta(minutes=15), 25)
        say(
            f"Simulating the rooms' sensors for the last {hours:g} h",
            f"air-conditioning failure in krios-room {self.fault.start:%H:%M}–"
            f"{self.fault.end:%H:%M} UTC",
        )
        self.env_sessionmaker = session_factory(self.database_url)
        bar = _bar(100, "readings")
        done = [0]

        def advance(fraction: float) -> None:
            step = int(fraction * 100) - done[0]
            if step > 0:
                bar.update(step)
                done[0] += step

        stored = replay_history(
            self.env_sessionmaker,
            start,
            now,
            [self.fault],
            seed=self.settings.seed,
            on_progress=advance,
        )
        bar.close()
        self.history_end = now
        self.results["env_history_readings"] = stored
        note(f"{stored} readings stored")

    # -- 3. portal -----------------------------------------------------------------
    def _start_portal(self):
        import logging

        from werkzeug.serving import make_server

        from cryofac.demo.client import PortalClient

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines
        server = make_server(self.host, self.port, self.app, threaded=True)
        self.port = server.server_port
        thread = threading.Thread(target=server.serve_forever, name="portal", daemon=True)
        thread.start()
        self.url = f"http://{self.host}:{self.port}"
        self.app.config["EXTERNAL_URL"] = self.url  # feed and download links name it
        self.client = PortalClient(self.url)
        say("Portal serving", self.url)
        return server

    def _start_live_feed(self):
        from cryofac.demo.environment import LiveFeed

        self.tech_token = self.client.token("tech", PASSWORD)
        feed = LiveFeed(
            self.client,
            self.tech_token,
            self.env_sessionmaker,
            self.history_end,
            period_s=10.0,
            seed=self.settings.seed + 1,
        )
        feed.step()  # catch up to now before anything asks the gate
        feed.start()
        note("live sensor feed: readings posted to /api/v1/env/readings every 10 s")
        return feed

    def _start_monitor(self, feed):
        from cryofac.demo.environment import start_monitor

        feed.evaluate = False  # the monitor evaluates alarms from now on
        process = start_monitor(self.database_url, self.workdir / "env-monitor.log")
        note(
            "alarm monitor: 'cryofac env monitor' (pid "
            f"{process.pid}) evaluates alarms every 10 s; log env-monitor.log"
        )
        return process

    # -- 4. bookings ---------------------------------------------------------------
    def _bookings(self) -> int:
        from cryofac.demo.client import PortalHTTPError

        say("Booking as the demo researcher (JSON API)")
        token = self.client.token("researcher", PASSWORD)
        self.researcher_token = token
        from portal.models import AcqSession, Project

        with self.sessionmaker() as db:
            project = {"id": db.query(Project).filter_by(code="MSB-2026-001").one().id}
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        # the first 09:00 UTC at least 48 h ahead (the Krios lead time) whatever the hour now
        day = (now + timedelta(days=3)).replace(hour=0, minute=0)
        # a Krios session tomorrow breaks the 48 h lead time: the rule is named
        try:
            self.client.request(
                "POST",
                "/api/v1/bookings",
                _booking("krios1", project["id"], now + timedelta(hours=20), 24),
                token=token,
                expect=(201,),
            )
            raise CryofacError("the portal accepted a booking that breaks the lead time")
        except PortalHTTPError as exc:
            note(f"refused as expected: HTTP {exc.status}: {exc.body['error']['message']}")
            self.results["refused_booking_status"] = exc.status
        microscope = self.client.request(
            "POST",
            "/api/v1/bookings",
            _booking("krios1", project["id"], day + timedelta(hours=9), 48),
            token=token,
            expect=(201,),
        ).body
        prep = self.client.request(
            "POST",
            "/api/v1/bookings",
            {
                **_booking("vitrobot1", project["id"], day + timedelta(hours=6), 2),
                "for_booking_id": microscope["id"],
            },
            token=token,
            expect=(201,),
        ).body
        note(f"vitrification slot #{prep['id']}: {prep['start']} ({prep['status']})")
        note(f"Krios session #{microscope['id']}: {microscope['start']} ({microscope['status']})")
        staff = self.client.token("staff", PASSWORD)
        self.staff_token = staff
        if microscope["status"] == "pending":
            self.client.request(
                "POST",
                f"/api/v1/bookings/{microscope['id']}/decision",
                {"approve": True, "reason": "demo: approved by facility staff"},
                token=staff,
            )
            note("staff approved the Krios session")
        with self.sessionmaker() as db:
            opened = db.query(AcqSession).filter_by(booking_id=microscope["id"]).one_or_none()
            session_id = opened.id if opened is not None else None
        if session_id is None:
            raise CryofacError("approving the Krios booking opened no session")
        self.results["session_id"] = session_id
        return int(session_id)

    # -- 5. gate -------------------------------------------------------------------
    def _gate_and_start(self, session_id: int) -> None:
        from portal.domain import sessions as lifecycle
        from portal.domain.errors import GateClosed
        from portal.models import AcqSession, User

        say("Environment gate at the session start")
        note("(the session is booked three days ahead; the demo runs it now)")
        self.raw_dir = self.workdir / "raw" / f"session-{session_id}"
        self.run_dir = self.workdir / "runs" / f"session-{session_id}"
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.sessionmaker() as db:
            staff = db.query(User).filter_by(username="staff").one()
            session = db.get(AcqSession, session_id)
            lifecycle.set_folders(db, staff, session, str(self.raw_dir), str(self.run_dir))
            db.commit()
        self.client.request(
            "POST",
            f"/api/v1/sessions/{session_id}/transition",
            {"state": "ready"},
            token=self.staff_token,
        )
        # replay a start attempted during the air-conditioning failure
        during = self.fault.start + timedelta(minutes=20)
        with self.sessionmaker() as db:
            staff = db.query(User).filter_by(username="staff").one()
            session = db.get(AcqSession, session_id)
            try:
                lifecycle.transition(db, staff, session, "acquiring", now=during)
                raise CryofacError("the gate let a session start during the AC failure")
            except GateClosed as exc:
                reasons = getattr(exc, "reasons", None) or [str(exc)]
                note(f"start at {during:%H:%M} UTC (during the AC failure): REFUSED")
                for reason in reasons[:3]:
                    note(f"  - {reason}")
                self.results["gate_refused_during_fault"] = True
            db.rollback()
        gate = self.client.request(
            "GET", "/api/v1/instruments/krios1/gate", token=self.staff_token
        ).body
        note(f"gate now: allowed={gate['allowed']}")
        for reason in gate["reasons"][:3]:
            note(f"  - {reason}")
        if not gate["allowed"]:
            raise CryofacError("the room is not within specification now; see the reasons")
        self.client.request(
            "POST",
            f"/api/v1/sessions/{session_id}/transition",
            {"state": "acquiring"},
            token=self.staff_token,
        )
        self.acquisition_start = datetime.now(UTC)
        self.results["gate_allowed_now"] = True
        note("session is acquiring")

    # -- 6. acquisition + processing -----------------------------------------------
    def _workflow_config(self) -> Path:
        import yaml

        s = self.settings
        config = {
            # stated here too: the watcher may start before acquisition.json lands
            "acquisition": {
                "pixel_size_A": s.pixel_size_A,
                "dose_per_frame_e_A2": s.dose_per_frame,
            },
            "batch_size": s.batch_size,
            "downstream": {"min_particles": s.min_particles, "growth": 1.5},
            "extract_bin": s.extract_bin,
            "movies": {"quiet_period_s": 2},
            # one thread per preprocessing job, so that Snakemake runs as many jobs side
            # by side as there are cores (a job of all the cores ran the batches' steps
            # one at a time, mostly on one core: numpy outside the FFTs is serial); the
            # reconstruction, alone at the end, keeps every core
            "resources": {
                step: {
                    "threads": (os.cpu_count() or 1) if step == "reconstruct" else 1,
                    "mem_mb": 4000,
                    "runtime": 60,
                    "gpu": 0,
                }
                for step in ("motioncorr", "ctf", "pick", "extract", "reconstruct")
            },
            "extraction": {"box_px": s.box_px},
            "reconstruct": {"symmetry": s.symmetry},
            **s.workflow_overrides,
        }
        path = self.workdir / "workflow-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_microscope(self) -> None:
        """Simulate the acquisition's movies ahead, at low priority, while the demo
        prepares the facility (:mod:`cryofac.demo.microscope`)."""
        from cryofac.demo.microscope import Microscope

        s = self.settings
        self.microscope = Microscope(
            self.workdir / "microscope", s.movies, s.acquisition(), self.workdir / "microscope.log"
        )
        self.microscope.start()
        note(
            f"simulating the {s.movies} movies ahead in {len(self.microscope.workers)} "
            "processes (log: microscope.log)"
        )

    def _acquire_and_process(self, session_id: int) -> None:
        from cryofac.demo.microscope import Landing

        s = self.settings
        bar = _bar(s.movies, "movies simulated")
        try:
            self.microscope.wait_staged(lambda done: done > bar.n and bar.update(done - bar.n))
        except RuntimeError as exc:
            raise CryofacError(f"simulated acquisition failed: {exc}") from None
        finally:
            bar.close()
        say(
            f"Acquiring {s.movies} movies into {self.raw_dir}",
            f"one every {s.interval_s:g} s ({3600 / s.interval_s:,.0f} movies/h; each lands "
            "at its scheduled time, whatever the load); `cryofac process --watch` "
            "processes them",
        )
        config = self._workflow_config()
        stop_file = self.run_dir / "STOP"
        log_path = self.workdir / "process.log"
        command = [
            sys.executable, "-m", "cryofac.cli", "process", str(self.raw_dir),
            "--out", str(self.run_dir), "--config", str(config), "--watch",
            "--interval", str(s.watch_interval_s), "--stop-file", str(stop_file),
            "--allow-failed-movies",  # failed movies are counted in the demo's result
        ]  # fmt: skip
        errors: list[BaseException] = []
        landing = Landing()
        stop = threading.Event()

        def acquire() -> None:
            try:
                self.microscope.release(self.raw_dir, s.interval_s, stop, landing)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        acquisition = threading.Thread(target=acquire, name="acquisition", daemon=True)
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            from workflows.control import die_with_this_process

            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_this_process(),  # a killed demo leaves no workflow behind
            )
            acquisition.start()
            bar = _bar(s.movies, "movies processed")
            try:
                while acquisition.is_alive():
                    self._update_bar(bar)
                    if process.poll() is not None:
                        break
                    time.sleep(1.0)
                stop.set()
                acquisition.join()
                if errors:
                    raise CryofacError(f"simulated acquisition failed: {errors[0]}")
                rate = landing.rate_per_h()
                self.results["acquisition"] = {
                    "movies_landed": len(landing.landed),
                    "nominal_per_h": round(3600 / s.interval_s, 1),
                    "landed_per_h": round(rate, 1) if rate else None,
                    "max_late_s": max(landing.late_s, default=0.0),
                }
                bar.write(
                    f"    acquisition finished: {len(landing.landed)} movies landed at "
                    f"{rate or 0:,.0f} movies/h (scheduled {3600 / s.interval_s:,.0f}/h)"
                )
                self.client.request(
                    "POST",
                    f"/api/v1/sessions/{session_id}/transition",
                    {"state": "processing"},
                    token=self.staff_token,
                )
                self.acquisition_end = datetime.now(UTC)
                stop_file.write_text("acquisition finished\n")
                while process.poll() is None:
                    self._update_bar(bar)
                    time.sleep(1.0)
                self._update_bar(bar)
            except BaseException:
                stop.set()
                self.microscope.stop()
                if process.poll() is None:
                    note("stopping: cryofac process and its jobs (a few seconds)")
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
                raise
            finally:
                bar.close()
        if process.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise CryofacError(
                f"cryofac process failed (exit {process.returncode}): "
                f"{tail[0] if tail else ''} — full log: {log_path}"
            )
        summary = json.loads((self.run_dir / "summary.json").read_text())
        self.results["processing_wall_s"] = round(time.monotonic() - t0, 1)
        self.results["summary"] = {
            k: summary.get(k)
            for k in ("movies_processed", "movies_failed", "particles", "resolution_A", "warnings")
        }
        note(
            f"{summary.get('movies_processed')} movies, {summary.get('particles')} particles, "
            f"resolution {summary.get('resolution_A')} Å (half-map FSC 0.143)"
        )
        self.client.request(
            "POST",
            f"/api/v1/sessions/{session_id}/transition",
            {"state": "complete"},
            token=self.staff_token,
        )

    def _update_bar(self, bar) -> None:
        path = self.run_dir / "summary.json"
        try:
            done = int(json.loads(path.read_text()).get("movies_processed") or 0)
        except (OSError, ValueError):
            return
        if done > bar.n:
            bar.update(done - bar.n)

    # -- 7. provenance -------------------------------------------------------------
    def _provenance(self, session_id: int) -> None:
        from instrument_env.provenance import write_provenance

        path = self.raw_dir / "environment.json"
        with self.env_sessionmaker() as db:
            summary = write_provenance(
                path, db, "krios1", self.acquisition_start, self.acquisition_end
            )
        say("Environmental provenance of the acquisition", str(path))
        self.results["provenance_channels"] = len(summary.get("channels", summary))

    # -- 8. download ---------------------------------------------------------------
    def _download(self, session_id: int) -> None:
        from pipeline.io.mrc import read_mrc

        say("The run as the demo researcher sees it (HTTP)")
        status = self.client.request(
            "GET", f"/api/v1/sessions/{session_id}", token=self.researcher_token
        ).body
        note(f"session state: {status['state']}")
        warnings = (status.get("processing") or {}).get("warnings") or []
        self.results["map_warnings"] = warnings
        for warning in warnings:
            note(f"warning shown with the run: {warning}")
        page = self.client.browser_get("researcher", PASSWORD, f"/sessions/{session_id}/run")
        if "map.mrc" not in page:
            raise CryofacError("the run page does not offer the map")
        self.results["run_page_bytes"] = len(page.encode())
        note(f"run page: {self.url}/sessions/{session_id}/run ({len(page.encode())} bytes)")
        say("Downloading the map as the demo researcher (HTTP)")
        listing = self.client.request(
            "GET", f"/api/v1/sessions/{session_id}/files", token=self.researcher_token
        ).body
        files = listing["files"] if isinstance(listing, dict) else listing
        names = [f["name"] for f in files]
        note("files: " + ", ".join(names))
        if "map.mrc" not in names:
            raise CryofacError("the run produced no map.mrc")
        dest = self.workdir / "downloads" / "map.mrc"
        size = self.client.download(
            f"/api/v1/sessions/{session_id}/files/map.mrc", dest, self.researcher_token
        )
        volume, pixel_size_A = read_mrc(dest)
        note(f"map.mrc: {size} bytes, box {volume.shape[0]}, {pixel_size_A:.3f} Å/pixel")
        truth = self.raw_dir / "truth" / "truth_map.mrc"
        if truth.exists():
            first, resolution = truth_resolutions_A(dest, truth)
            self.results["resolution_vs_truth_A"] = resolution
            self.results["resolution_vs_truth_first_A"] = first
            note(
                f"FSC against the simulated truth falls below 0.5 for good at "
                f"{resolution:.1f} Å (first at {first:.1f} Å)"
            )
        self.results["map_downloaded_bytes"] = size

    def _banner(self, finished: bool) -> None:
        say("Done" if finished else "Portal")
        note(f"portal: {self.url}")
        note(f"log in as researcher / staff / tech / admin, password: {PASSWORD}")
        if "session_id" in self.results:
            note(f"run page: {self.url}/sessions/{self.results['session_id']}/run")
        note(f"results: {self.workdir / 'demo-result.json'}")


def truth_resolution_A(map_path: Path, truth_path: Path, symmetry: str = "C1") -> float:
    """Resolution (Å) where the FSC of ``map_path`` against the truth first drops below
    0.5 (:func:`truth_resolutions_A`)."""
    return truth_resolutions_A(map_path, truth_path)[0]


def truth_resolutions_A(map_path: Path, truth_path: Path) -> tuple[float, float]:
    """Where the FSC of ``map_path`` against the truth drops below 0.5: first, and for
    good (:func:`pipeline.reconstruction.fsc.final_resolution_at`), in Å.

    The truth is resampled to the map's pixel size and box; the map is aligned to
    it (orientation, translation and hand) before the FSC. The two differ when the curve
    dips at a shell where the structure has almost no power and recovers: the demo's
    apoferritin (a hollow shell) has such a minimum near 16 Å, where a right map's FSC
    sits at 0.49–0.57 between 0.8 on either side.
    """
    import numpy as np
    from scipy import ndimage

    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.align import aligned_fsc
    from pipeline.reconstruction.fsc import final_resolution_at, resolution_at

    volume, pixel = read_mrc(map_path)
    truth, truth_pixel = read_mrc(truth_path)
    if abs(truth_pixel - pixel) > 1e-3 or truth.shape != volume.shape:
        zoom = truth_pixel / pixel
        truth = ndimage.zoom(np.asarray(truth, dtype=np.float32), zoom, order=3)
        box = volume.shape[0]
        truth = _fit_box(truth, box)
    curve = aligned_fsc(np.asarray(volume), np.asarray(truth), pixel)
    box = volume.shape[0]
    return (
        float(resolution_at(curve, box, pixel, 0.5)),
        float(final_resolution_at(curve, box, pixel, 0.5)),
    )


def _fit_box(volume, box: int):
    import numpy as np

    out = np.zeros((box, box, box), dtype=np.float32)
    n = volume.shape[0]
    if n >= box:
        start = (n - box) // 2
        return np.ascontiguousarray(
            volume[start : start + box, start : start + box, start : start + box]
        )
    start = (box - n) // 2
    out[start : start + n, start : start + n, start : start + n] = volume
    return out


def _booking(instrument: str, project_id: int, start: datetime, hours: float) -> dict:
    return {
        "instrument_id": instrument,
        "project_id": project_id,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=hours)).isoformat(),
    }


def _bar(total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=f" {unit}", file=sys.stdout, dynamic_ncols=True, leave=True)

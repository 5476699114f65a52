"""The running stack: broker, PostgreSQL (embedded unless pointed elsewhere), four services.

`Stack.start()` starts what is missing, creates every topic, starts each service as its
own process (`python -m perlinsos_<service>`), waits until each answers `/readyz`, and
`Stack.stop()` stops everything in reverse order, leaving no process or port behind.
What can overlap does: the service processes start first and import while the broker and
PostgreSQL start (`warm.py`: their settings follow on stdin), and the topics, the logins
and the agency keys are made side by side as soon as their server answers. Each step's
start and end is kept (`Stack.timeline`); `perlinsos up` writes them, with each service's
own start-up steps from its log, to `<state>/logs/startup.log`.

`Stack.supervise()` (what `perlinsos up` runs) then keeps it running the way an
orchestrator would, from a thread of its own:

- a service that exits or is killed is started again after a capped, jittered backoff
  (0.5 s doubling to 10 s; back to 0.5 s once it has run for 30 s); one that stops
  answering `/livez` for 30 s is killed and started again, and so is one whose start
  hangs (its `/livez` fails once start-up overran `PERLINSOS_STARTUP_DEADLINE_S`, or it
  never answers within `START_TIMEOUT_S`);
- embedded PostgreSQL that exits is started again on the same data directory (crash
  recovery replays its WAL); the services reconnect by themselves;
- the embedded broker that exits is started again, and since it keeps topics in memory
  it comes back empty: the services are stopped, every topic is created again, every
  service's outbox is replayed, and the services start again. Their relays publish the
  replayed rows in outbox order before any new one (nothing runs during the replay), and
  consumers drop what their inbox has already applied. Agency submissions that were on
  the broker but not yet consumed are gone: agencies resubmit those without an answer,
  which is idempotent by (agency, request id). See docs/RELIABILITY.md.

Every exit, restart and recovery is a `StackEvent`: kept in `Stack.events`, written to
`<state>/logs/supervisor.log` and passed to `on_event` (`perlinsos up` prints it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from perlinsos_devruntime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port_block
from perlinsos_devruntime.provisioning import (
    Logins,
    provision_agency_keys,
    provision_agency_topics,
    provision_logins,
)
from perlinsos_shared.db_roles import SERVICES as SERVICES  # re-exported: the services a stack runs
from perlinsos_shared.db_roles import login_url
from perlinsos_shared.kafka import ensure_topics
from perlinsos_shared.operator import replay_outboxes
from perlinsos_shared.settings import Settings, settings_env
from perlinsos_shared.signing import KEYS_ENV

# Restart backoff, liveness and the supervisor's own pace (seconds).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
BACKOFF_RESET_AFTER_S = 30.0
LIVENESS_EVERY_S = 5.0
LIVENESS_FAILURES = 6  # consecutive failed /livez probes before the process is killed
SUPERVISE_EVERY_S = 0.25
SERVICE_STOP_GRACE_S = 5.0
START_TIMEOUT_S = 180.0
# The embedded broker (Tansu) holds every consumer group join in 1 s steps until half the
# session timeout has passed (at least 1 s), so that members starting together join one
# generation: with the default 6 s each service's first join took 3 s. Against it, unless
# PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS says otherwise, the services join with this session
# timeout instead (a join of 2 s). It also bounds how long a service's event loop may stall
# before a group with several of its consumers (registry's two, premium's three) is
# rebalanced (the inbox drops what is delivered again): at 2 s (a 1 s join) that happened
# three times in a cohort run at load 13.
EMBEDDED_SESSION_TIMEOUT_MS = 4000
# Partitions per catalogue topic on the embedded broker, for a stack that runs one
# instance of each service (`perlinsos up`, `perlinsos cohort`, the benchmarks). The
# embedded broker (Tansu 0.6, memory storage) stores each produced batch of a partition as
# one object and, on every fetch that has records for a partition, lists all of that
# partition's objects: its cost per fetch grows with what the topic holds, and with six
# partitions a relay round's records of one topic are up to six small batches instead of
# one. `Stack` keeps the catalogue's own counts unless given `topic_partitions` (stacks
# that run several instances of a service, as the flow tests and the fault suite do, need
# them); the one-instance entry points pass this. docs/benchmarks.md, "The embedded
# broker's partitions".
EMBEDDED_TOPIC_PARTITIONS = 1


def for_embedded_broker(settings: Settings) -> Settings:
    """What the services are given against the embedded broker: no idempotent producer
    (it does not implement it) and, unless set, `EMBEDDED_SESSION_TIMEOUT_MS`."""
    update: dict[str, object] = {"kafka_idempotent": False}
    if "consumer_session_timeout_ms" not in settings.model_fields_set:
        update["consumer_session_timeout_ms"] = EMBEDDED_SESSION_TIMEOUT_MS
    return settings.model_copy(update=update)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter, reset after a long enough healthy run."""

    first: float = BACKOFF_FIRST_S
    cap: float = BACKOFF_MAX_S
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return delay * random.uniform(0.8, 1.2)

    def healthy_for(self, seconds: float) -> None:
        if seconds >= BACKOFF_RESET_AFTER_S:
            self.failures = 0


@dataclass(frozen=True)
class StackEvent:
    """One thing the supervisor saw or did: `part` is a service name, "broker" or
    "postgres"; `what` is "exited", "restarted", "ready", "not live", "restart failed"
    or "replayed"."""

    at: float
    part: str
    what: str
    detail: str = ""

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"{stamp} {self.part}: {self.what}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Step:
    """One step of `Stack.start()`: what, and when it began and ended (epoch seconds)."""

    name: str
    began: float
    ended: float

    def line(self, origin: float) -> str:
        return f"{self.began - origin:7.2f} {self.ended - origin:7.2f}  {self.name}"


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    env: dict[str, str] = field(default_factory=dict, repr=False)
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    ready: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # set while it waits to be started again
    live_failures: int = 0
    next_live_probe: float = 0.0

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class _Component:
    """Supervision state of the embedded broker or PostgreSQL."""

    backoff: Backoff = field(default_factory=Backoff)
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Stack:
    settings: Settings
    kafka_port: int = 9092
    pg_port: int = 5433
    http_port_base: int = 8081
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    services: list[ServiceProcess] = field(default_factory=list)
    # What the services are given as DATABASE_URL when it differs from `database_url`
    # (the fault suite puts a TCP proxy it can cut in between).
    service_database_url: str | None = None
    on_event: Callable[[StackEvent], None] | None = None
    events: list[StackEvent] = field(default_factory=list)
    # Partitions of every catalogue topic on the embedded broker (None: the catalogue's
    # own counts); a broker the settings name gets the catalogue's counts.
    topic_partitions: int | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _supervisor: threading.Thread | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _broker_state: _Component = field(default_factory=_Component, repr=False)
    _postgres_state: _Component = field(default_factory=_Component, repr=False)
    _logins: Logins | None = field(default=None, init=False, repr=False)
    _agency_keys: Path | None = field(default=None, init=False, repr=False)
    _warm: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = field(
        default_factory=dict, init=False, repr=False
    )
    # what `start()` did and when (also written to <state>/logs/startup.log)
    timeline: list[Step] = field(default_factory=list, init=False, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def bootstrap_servers(self) -> str:
        if self.settings.kafka_bootstrap_servers:
            return self.settings.kafka_bootstrap_servers
        assert self.kafka is not None
        return self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        assert self.postgres is not None
        return self.postgres.admin_url

    @property
    def logins(self) -> Logins:
        """Each service's own database login and the operators' read-only one, made once
        with the privileged `database_url` (which no service is ever given)."""
        if self._logins is None:
            self._logins = provision_logins(self.database_url, self.state_dir)
        return self._logins

    def service_login(self, name: str) -> str:
        """DATABASE_URL of one service process: its own login (through the fault suite's
        proxy when there is one)."""
        own = self.logins.services[name]
        if self.service_database_url is None:
            return own
        parts = urlsplit(own)
        return login_url(
            self.service_database_url, unquote(parts.username or ""), unquote(parts.password or "")
        )

    @property
    def agency_keys(self) -> Path:
        """The registered agency public keys registry checks intake against (made once;
        `PERLINSOS_AGENCY_KEYS` names a real file instead)."""
        if self._agency_keys is None:
            given = os.environ.get(KEYS_ENV)
            self._agency_keys = Path(given) if given else provision_agency_keys(self.state_dir)
        return self._agency_keys

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(settings_env(self.settings))
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            DATABASE_URL=self.service_database_url or self.database_url,
            PERLINSOS_STATE_DIR=str(self.state_dir.resolve()),
        )
        env[KEYS_ENV] = str(self.agency_keys)
        return env

    def start_infrastructure(self) -> None:
        """Broker and PostgreSQL side by side: the topics as soon as the broker answers,
        the logins as soon as PostgreSQL does, the agency keys meanwhile."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.kafka_bootstrap_servers:
            self.kafka = EmbeddedKafka(self.state_dir, port=self.kafka_port)
            self.settings = for_embedded_broker(self.settings)
        if not self.settings.database_url:
            self.postgres = EmbeddedPostgres(self.state_dir, port=self.pg_port)
        kafka, postgres = self.kafka, self.postgres
        errors: list[BaseException] = []

        def broker() -> None:
            if kafka is not None:
                with self._step("broker"):
                    kafka.start()
            with self._step("topics"):
                self._create_topics()

        def database() -> None:
            if postgres is not None:
                with self._step("postgres"):
                    postgres.start()
            with self._step("logins"):
                _ = self.logins

        def keys() -> None:
            with self._step("agency keys"):
                _ = self.agency_keys

        def run(branch: Callable[[], None]) -> None:
            try:
                branch()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(b,)) for b in (broker, database, keys)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        began = time.time()
        try:
            yield
        finally:
            self.timeline.append(Step(name, began, time.time()))

    def write_timeline(self, origin: float) -> list[Step]:
        """`<state>/logs/startup.log`: each step of the start and of each service's own
        start-up (from its log), seconds since `origin`; returns them in order."""
        steps = sorted(
            [*self.timeline, *(s for svc in self.services for s in _service_steps(svc, origin))],
            key=lambda s: (s.began, s.ended),
        )
        path = self.state_dir / "logs" / "startup.log"
        lines = [step.line(origin) for step in steps]
        path.write_text("  began   ended  step\n" + "\n".join(lines) + "\n", encoding="utf-8")
        return steps

    def _create_topics(self) -> None:
        topic_settings = self.settings.model_copy(
            update={"kafka_bootstrap_servers": self.bootstrap_servers}
        )
        partitions = self.topic_partitions if self.kafka is not None else None
        asyncio.run(ensure_topics(topic_settings, partitions=partitions))
        provision_agency_topics(topic_settings)

    def start_services(
        self,
        names: tuple[str, ...] = SERVICES,
        timeout: float = START_TIMEOUT_S,
        extra_env: dict[str, str] | None = None,
    ) -> list[ServiceProcess]:
        """Start one process per name (a name twice: two instances in one consumer group)."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**self.service_env(), **(extra_env or {})}
        started: list[ServiceProcess] = []
        with self._lock:
            for name in names:
                port = self._next_port(name)
                instance = sum(1 for s in self.services if s.name == name)
                log_path = logs / (f"{name}.log" if instance == 0 else f"{name}-{instance}.log")
                svc_env = {
                    **env,
                    "PERLINSOS_METRICS_PORT": str(port),
                    "DATABASE_URL": self.service_login(name),
                }
                warm = self._warm.pop(name, None) if instance == 0 else None
                if warm is not None:  # started ahead (`start`): hand it its settings
                    proc, log_file = warm
                    _hand_env(proc, svc_env)
                else:
                    log_file = log_path.open("ab")
                    proc = _spawn_service(name, svc_env, log_file)
                svc = ServiceProcess(name, port, proc, log_path, log_file, env=svc_env)
                self.services.append(svc)
                started.append(svc)
        self.wait_ready(started, timeout)
        return started

    def _next_port(self, name: str) -> int:
        if self.http_port_base == 0:  # outside the ephemeral range: see free_port_block
            taken = {s.port for s in self.services}
            port = free_port_block(1)
            while port in taken:
                port = free_port_block(1)
            return port
        taken = {s.port for s in self.services}
        port = self.http_port_base + SERVICES.index(name)
        while port in taken:
            port += len(SERVICES)
        return port

    def wait_ready(self, services: list[ServiceProcess], timeout: float = START_TIMEOUT_S) -> None:
        """Until every one of `services` answers `/readyz` (all asked each round)."""
        deadline = time.monotonic() + timeout
        began = time.time()
        waiting = list(services)
        while waiting:
            for svc in list(waiting):
                if _ready(svc.health_url):
                    svc.ready = True
                    waiting.remove(svc)
                    self.timeline.append(Step(f"{svc.name} ready", began, time.time()))
                elif svc.process.poll() is not None:
                    tail = svc.log_path.read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"{svc.name} exited while starting:\n{tail}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{waiting[0].name} not ready after {timeout:.0f}s")
            time.sleep(0.05)

    def start(self) -> None:
        """Everything, in parallel where it can be: the service processes start first and
        import what they need while the broker and PostgreSQL start (`warm.py`); they get
        their settings once those answer."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with self._step("service processes spawned"):
            for name in SERVICES:
                log_file = (logs / f"{name}.log").open("ab")
                self._warm[name] = (_spawn_warm(name, log_file), log_file)
        try:
            self.start_infrastructure()
            # generous: a service on a loaded 2-core machine can take a minute to import
            self.start_services(timeout=START_TIMEOUT_S)
        finally:
            self._drop_warm()

    def _drop_warm(self) -> None:
        """Processes started ahead that were never given their settings: ended."""
        warm, self._warm = self._warm, {}
        for proc, log_file in warm.values():
            _hand_env(proc, None)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log_file.close()

    def stop_service(self, svc: ServiceProcess, sig: int = signal.SIGTERM) -> None:
        """Stop one instance for good (SIGKILL to simulate a crash); not restarted."""
        with self._lock:
            if svc in self.services:
                self.services.remove(svc)
        if svc.process.poll() is None:
            svc.process.send_signal(sig)
        try:
            svc.process.wait(15)
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()
        svc.log_file.close()

    def stop_services(self, timeout: float = 15) -> None:
        with self._lock:
            services = list(self.services)
            self.services.clear()
        _stop_processes(services, timeout)
        for svc in services:
            svc.log_file.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=60)
        self.stop_services()
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def alive(self) -> list[str]:
        """Services whose process has exited unexpectedly."""
        return [s.name for s in self.services if s.process.poll() is not None]

    # ------------------------------------------------------------------ supervision

    def supervise(self) -> None:
        """Keep the stack running from a background thread until `stop()`."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        now = time.monotonic()
        self._broker_state.started_at = self._postgres_state.started_at = now
        self._supervisor = threading.Thread(
            target=self._supervise, name="perlinsos-stack-supervisor", daemon=True
        )
        self._supervisor.start()

    def restarts(self) -> dict[str, int]:
        """Restarts so far per part (service name, "broker", "postgres")."""
        out = {"broker": self._broker_state.restarts, "postgres": self._postgres_state.restarts}
        with self._lock:
            for svc in self.services:
                out[svc.name] = out.get(svc.name, 0) + svc.restarts
        return out

    def _event(self, part: str, what: str, detail: str = "") -> None:
        event = StackEvent(time.time(), part, what, detail)
        self.events.append(event)
        try:
            logs = self.state_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with (logs / "supervisor.log").open("a", encoding="utf-8") as fh:
                fh.write(event.line() + "\n")
        except OSError:
            pass
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a printing problem must not stop the supervisor
                pass

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            try:
                self._watch_postgres()
                if self._stopping.is_set():
                    break
                self._watch_broker()
                if self._stopping.is_set():
                    break
                self._watch_services()
            except Exception as exc:  # keep supervising whatever one round hit
                self._event("supervisor", "round failed", repr(exc)[:200])

    def _restart_due(self, part: str, pid: int | None, st: _Component) -> bool:
        """Whether an embedded server that is gone should be started again now."""
        now = time.monotonic()
        if pid is not None:
            st.backoff.healthy_for(now - st.started_at)
            return False
        if st.restart_at is None:
            st.restart_at = now + st.backoff.next_delay()
            self._event(part, "exited", f"restart in {st.restart_at - now:.1f}s")
            return False
        return now >= st.restart_at

    def _restart_failed(self, part: str, st: _Component, exc: Exception) -> None:
        st.restart_at = time.monotonic() + st.backoff.next_delay()
        self._event(part, "restart failed", (str(exc).splitlines() or [repr(exc)])[0][:200])

    def _restarted(self, part: str, st: _Component, detail: str) -> None:
        st.restart_at, st.started_at = None, time.monotonic()
        st.restarts += 1
        self._event(part, "restarted", f"restart #{st.restarts}, {detail}")

    def _watch_postgres(self) -> None:
        pg, st = self.postgres, self._postgres_state
        if pg is None or not self._restart_due("postgres", pg.pid, st):
            return
        try:
            pg.start()
        except Exception as exc:
            self._restart_failed("postgres", st, exc)
            return
        self._restarted("postgres", st, "same data directory")

    def _watch_broker(self) -> None:
        kafka, st = self.kafka, self._broker_state
        if kafka is not None and self._restart_due("broker", kafka.pid, st):
            self._recover_broker(st)

    def _recover_broker(self, st: _Component) -> None:
        """Start the broker again (empty), and refill it from the outboxes in order."""
        assert self.kafka is not None
        with self._lock:
            services = list(self.services)
            for svc in services:
                svc.restart_at = float("inf")  # held: started again below
        _stop_processes(services, SERVICE_STOP_GRACE_S)
        try:
            self.kafka.start()
            self._create_topics()
            replayed = self._replay_outboxes()
        except Exception as exc:
            self._restart_failed("broker", st, exc)
            with self._lock:
                for svc in services:
                    svc.restart_at = time.monotonic()  # the service loop restarts them
            return
        self._restarted("broker", st, "empty: topics created")
        self._event(
            "broker",
            "replayed",
            ", ".join(f"{name} {n:,}" for name, n in replayed.items()) + " outbox events",
        )
        with self._lock:
            for svc in services:
                if svc in self.services:
                    self._respawn(svc, "broker restarted")

    def _replay_outboxes(self) -> dict[str, int]:
        names = tuple(dict.fromkeys(s.name for s in self.services)) or SERVICES
        return asyncio.run(replay_outboxes(self.database_url, names))

    def _watch_services(self) -> None:
        with self._lock:
            services = list(self.services)
        for svc in services:
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if svc.process.poll() is not None:
                if svc.restart_at is None:
                    svc.restart_at = now + svc.backoff.next_delay()
                    svc.ready = False
                    self._event(
                        svc.name,
                        "exited",
                        f"{_how_it_ended(svc.process.returncode)}; "
                        f"restart in {svc.restart_at - now:.1f}s",
                    )
                elif now >= svc.restart_at:
                    with self._lock:
                        if svc in self.services:
                            self._respawn(svc, "")
                continue
            if not svc.ready:
                if _ready(svc.health_url):
                    svc.ready = True
                    svc.live_failures = 0
                    if svc.restarts:
                        self._event(
                            svc.name, "ready", f"{now - svc.started_at:.1f}s after its start"
                        )
                else:
                    self._watch_start(svc, now)
                continue
            svc.backoff.healthy_for(now - svc.started_at)
            if now >= svc.next_live_probe:
                svc.next_live_probe = now + LIVENESS_EVERY_S
                if _answers(svc.health_url + "/livez"):
                    svc.live_failures = 0
                else:
                    svc.live_failures += 1
                    if svc.live_failures >= LIVENESS_FAILURES:
                        self._event(
                            svc.name,
                            "not live",
                            f"/livez failed {svc.live_failures} times: killed",
                        )
                        svc.process.kill()

    def _watch_start(self, svc: ServiceProcess, now: float) -> None:
        """A start that hangs is killed (and so started again): the service's `/livez`
        fails once its start-up overran `PERLINSOS_STARTUP_DEADLINE_S`, and one that
        never answers at all is given `START_TIMEOUT_S`."""
        if now < svc.next_live_probe:
            return
        svc.next_live_probe = now + LIVENESS_EVERY_S
        status, reason = _livez(svc.health_url)
        if status == 503:
            svc.live_failures += 1
        elif status is None and now - svc.started_at > START_TIMEOUT_S:
            svc.live_failures, reason = LIVENESS_FAILURES, f"no answer for {START_TIMEOUT_S:.0f}s"
        else:
            svc.live_failures = 0
        if svc.live_failures >= LIVENESS_FAILURES:
            self._event(svc.name, "start-up stuck", f"{reason}: killed")
            svc.process.kill()

    def _respawn(self, svc: ServiceProcess, why: str) -> None:
        if svc.process.poll() is None:
            return
        svc.log_file.close()
        svc.log_file = svc.log_path.open("ab")
        svc.process = _spawn_service(svc.name, svc.env, svc.log_file)
        svc.started_at = time.monotonic()
        svc.restart_at, svc.ready, svc.live_failures = None, False, 0
        svc.next_live_probe = 0.0
        svc.restarts += 1
        self._event(
            svc.name,
            "restarted",
            f"restart #{svc.restarts}, pid {svc.process.pid}" + (f", {why}" if why else ""),
        )


def _service_steps(svc: ServiceProcess, since: float) -> list[Step]:
    """A service's start-up steps from its log ("starting: X" lines up to "service
    ready"), each ending where the next begins; lines before `since` are ignored."""
    marks: list[tuple[float, str]] = []
    try:
        text = svc.log_path.read_text(errors="replace")
    except OSError:
        return []
    for raw in text.splitlines():
        if not raw.startswith("{"):
            continue
        try:
            line = json.loads(raw)
            at = datetime.fromisoformat(line["time"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        message = str(line.get("message", ""))
        if at < since:
            continue
        if message.startswith("starting: "):
            marks.append((at, message.removeprefix("starting: ")))
        elif message == "service ready":
            marks.append((at, ""))
    return [
        Step(f"{svc.name}: {what}", at, next_at)
        for (at, what), (next_at, _) in pairwise(marks)
        if what
    ]


def _spawn_service(name: str, env: dict[str, str], log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"perlinsos_{name}"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def _spawn_warm(name: str, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """A service process that imports ahead and waits for its settings (`warm.py`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "perlinsos_devruntime.warm", name],
        stdin=subprocess.PIPE,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def _hand_env(proc: subprocess.Popen[bytes], env: dict[str, str] | None) -> None:
    """Give a warm process its environment (None: nothing, it ends)."""
    assert proc.stdin is not None
    try:
        if env is not None:
            proc.stdin.write(json.dumps(env).encode() + b"\n")
        proc.stdin.close()
    except OSError:  # it exited already: wait_ready reports it with its log
        pass


def _stop_processes(services: list[ServiceProcess], timeout: float) -> None:
    for svc in services:
        if svc.process.poll() is None:
            svc.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for svc in services:
        try:
            svc.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _livez(url: str) -> tuple[int | None, str]:
    """`/livez`'s status and reason (None: no answer)."""
    try:
        with urllib.request.urlopen(url + "/livez", timeout=2) as resp:
            return int(resp.status), ""
    except urllib.error.HTTPError as err:
        try:
            reason = str(json.loads(err.read()).get("reason", ""))
        except ValueError:
            reason = ""
        return int(err.code), reason or f"/livez answered {err.code}"
    except OSError:
        return None, ""


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False

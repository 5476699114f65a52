"""The running stack: broker, PostgreSQL (embedded unless pointed elsewhere), four services.

`Stack.start()` starts what is missing, creates every topic, starts each service as its
own process (`python -m perlinsos_<service>`), waits until each answers `/readyz`, and
`Stack.stop()` stops everything in reverse order, leaving no process or port behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from perlinsos_cli.provisioning import (
    Logins,
    provision_agency_keys,
    provision_agency_topics,
    provision_logins,
)
from perlinsos_shared.embedded import EmbeddedKafka, EmbeddedPostgres, free_port_block
from perlinsos_shared.kafka import ensure_topics
from perlinsos_shared.settings import Settings, settings_env
from perlinsos_shared.signing import KEYS_ENV

SERVICES = ("registry", "eligibility", "premium", "notify")


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    settings: Settings
    kafka_port: int = 9092
    pg_port: int = 5433
    http_port_base: int = 8081
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    services: list[ServiceProcess] = field(default_factory=list)
    _logins: Logins | None = field(default=None, init=False, repr=False)
    _agency_keys: Path | None = field(default=None, init=False, repr=False)

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
        """Each service's own database login and the operators' read-only one (made once)."""
        if self._logins is None:
            self._logins = provision_logins(self.database_url, self.state_dir)
        return self._logins

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
            DATABASE_URL=self.database_url,
            PERLINSOS_STATE_DIR=str(self.state_dir.resolve()),
        )
        env[KEYS_ENV] = str(self.agency_keys)
        return env

    def start_infrastructure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.kafka_bootstrap_servers:
            self.kafka = EmbeddedKafka(self.state_dir, port=self.kafka_port)
        if not self.settings.database_url:
            self.postgres = EmbeddedPostgres(self.state_dir, port=self.pg_port)
        starters = [c for c in (self.kafka, self.postgres) if c is not None]
        errors: list[BaseException] = []

        def run(component: EmbeddedKafka | EmbeddedPostgres) -> None:
            try:
                component.start()
            except BaseException as exc:
                errors.append(exc)

        import threading

        threads = [threading.Thread(target=run, args=(c,)) for c in starters]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        topic_settings = self.settings.model_copy(
            update={"kafka_bootstrap_servers": self.bootstrap_servers}
        )
        asyncio.run(ensure_topics(topic_settings))
        provision_agency_topics(topic_settings)

    def start_services(
        self,
        names: tuple[str, ...] = SERVICES,
        timeout: float = 60,
        extra_env: dict[str, str] | None = None,
    ) -> list[ServiceProcess]:
        """Start one process per name (a name twice: two instances in one consumer group)."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**self.service_env(), **(extra_env or {})}
        started: list[ServiceProcess] = []
        for name in names:
            port = self._next_port(name)
            instance = sum(1 for s in self.services if s.name == name)
            log_path = logs / (f"{name}.log" if instance == 0 else f"{name}-{instance}.log")
            log_file = log_path.open("ab")
            proc = subprocess.Popen(
                [sys.executable, "-m", f"perlinsos_{name}"],
                env={
                    **env,
                    "PERLINSOS_METRICS_PORT": str(port),
                    "DATABASE_URL": self.logins.services[name],
                },
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            svc = ServiceProcess(name, port, proc, log_path, log_file)
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

    def wait_ready(self, services: list[ServiceProcess], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for svc in services:
            while not _ready(svc.health_url):
                if svc.process.poll() is not None:
                    tail = svc.log_path.read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"{svc.name} exited while starting:\n{tail}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{svc.name} not ready after {timeout:.0f}s")
                time.sleep(0.1)

    def start(self) -> None:
        self.start_infrastructure()
        self.start_services()

    def stop_service(self, svc: ServiceProcess, sig: int = signal.SIGTERM) -> None:
        """Stop one instance (SIGKILL to simulate a crash)."""
        if svc.process.poll() is None:
            svc.process.send_signal(sig)
        try:
            svc.process.wait(15)
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()
        svc.log_file.close()
        self.services.remove(svc)

    def stop_services(self, timeout: float = 15) -> None:
        for svc in self.services:
            if svc.process.poll() is None:
                svc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for svc in self.services:
            try:
                svc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.process.kill()
                svc.process.wait()
            svc.log_file.close()
        self.services.clear()

    def stop(self) -> None:
        self.stop_services()
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def alive(self) -> list[str]:
        """Services whose process has exited unexpectedly."""
        return [s.name for s in self.services if s.process.poll() is not None]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False

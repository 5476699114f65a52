"""The `perlinsos` command fails politely: one line on stderr, a meaningful exit status.

A database or broker out of reach, or none configured: exit 1, the line names what and
where and how to point elsewhere. Bad arguments: exit 2 with the accepted values. A NIK
nobody knows: exit 1. Never a traceback. The commands run in this process through the
same `main()` the installed script calls.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from perlinsos_cli.main import app, main
from perlinsos_shared.db import open_service_db
from perlinsos_shared.settings import get_settings

UNKNOWN_NIK = "2171011708900001"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS pointing at ports nothing answers on."""
    db = f"postgresql://perlinsos:s3cret@127.0.0.1:{closed_port()}/perlinsos"
    kafka = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka)
    monkeypatch.setenv("PERLINSOS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield db, kafka
    get_settings.cache_clear()


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Neither variable set, and no `perlinsos up` running (no stack file)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("PERLINSOS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("perlinsos: ")
    return lines[0]


NEEDS_DATABASE = [
    ["registry", "audit", UNKNOWN_NIK],
    ["eligibility", "explain", UNKNOWN_NIK],
    ["eligibility", "places"],
    ["eligibility", "promote"],
    ["premium", "status"],
    ["premium", "close", "2026-10"],
    ["premium", "adjustments", "2026-10"],
    ["finance", "export", "--period", "2026-10", "--format", "csv"],
    ["notify", "status", UNKNOWN_NIK],
    ["notify", "failures"],
    ["outbox", "status"],
    ["outbox", "replay"],
    ["outbox", "refused"],
    ["outbox", "retry", "premium"],
]
PAYMENT = ["premium", "record-payment", "--line", "PERWAKO-3-2023", "--period", "2026-10"]
PAYMENT += ["--amount", "16800", "--reference", "SP2D-1"]


@pytest.mark.parametrize("argv", NEEDS_DATABASE, ids=" ".join)
def test_an_unreachable_database_is_one_line_and_exit_1(
    argv: list[str], nowhere: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    line = one_line(err)
    assert code == 1
    db_url = nowhere[0]
    where = db_url.split("@", 1)[1]  # 127.0.0.1:PORT/perlinsos
    assert f"cannot reach the database at {where}" in line
    assert "DATABASE_URL" in line and "perlinsos up" in line
    assert "s3cret" not in err, "no password on screen"


NEEDS_BROKER = [
    PAYMENT,
    ["dlq", "list"],
    ["dlq", "redrive", "registry.intake.v1"],
]


@pytest.mark.parametrize("argv", NEEDS_BROKER, ids=" ".join)
def test_an_unreachable_broker_is_one_line_and_exit_1(
    argv: list[str], nowhere: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    line = one_line(err)
    assert code == 1
    assert f"cannot reach the Kafka broker at {nowhere[1]}" in line
    assert "KAFKA_BOOTSTRAP_SERVERS" in line


@pytest.mark.parametrize("argv", [NEEDS_DATABASE[4], PAYMENT], ids=["database", "broker"])
def test_nothing_configured_says_what_to_set(
    argv: list[str], unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    line = one_line(err)
    assert code == 1
    variable = "DATABASE_URL" if argv == NEEDS_DATABASE[4] else "KAFKA_BOOTSTRAP_SERVERS"
    assert f"{variable} is not set" in line and "perlinsos up" in line


@pytest.mark.parametrize(
    ("argv", "accepted"),
    [
        (["premium", "close", "2026-13"], "YYYY-MM"),
        (["premium", "status", "--period", "Oktober"], "YYYY-MM"),
        (["finance", "export", "--period", "2026-1"], "YYYY-MM"),
        (["finance", "export", "--format", "pdf"], "'xlsx', 'csv'"),
        ([*PAYMENT, "--paid-on", "kemarin"], "YYYY-MM-DD"),
        (["premium", "record-payment", "--line", "PERWAKO-1-2020"], "PERWAKO-49-2025"),
        (["eligibility", "reevaluate", "--line", "PERWAKO-3-2023", "--as-of", "x"], "YYYY-MM-DD"),
        (["eligibility", "explain", "12345"], "16 digits"),
        (["outbox", "replay", "--service", "billing"], "'registry', 'eligibility'"),
        (["no-such-command"], "No such command"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_bad_arguments_exit_2_naming_what_is_accepted(
    argv: list[str], accepted: str, nowhere: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    line = one_line(err)
    assert code == 2
    assert accepted in line, line
    assert "--help" in line


@pytest.mark.db
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["eligibility", "explain", UNKNOWN_NIK], "no participant with NIK 217101********01"),
        (["notify", "status", UNKNOWN_NIK], "no SMS recorded for 217101********01"),
        (["registry", "audit", UNKNOWN_NIK], "no participant or submission for NIK 217101"),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else "",
)
def test_an_unknown_nik_is_one_line_and_exit_1(
    argv: list[str],
    said: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PERLINSOS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    try:
        # Before the service has ever run, its tables are missing: also one line.
        code, _, err = run(argv, capsys)
        assert code == 1 and "no such table yet" in one_line(err)
        asyncio.run(service_schema(database_url, argv[0]))  # as if the service had started
        code, _, err = run(argv, capsys)
    finally:
        get_settings.cache_clear()
    line = one_line(err)
    assert code == 1
    assert said in line
    assert UNKNOWN_NIK not in err, "the NIK is masked"


async def service_schema(database_url: str, service: str) -> None:
    pool = await open_service_db(database_url, service)
    await pool.close()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("perlinsos ") and out.split()[1][0].isdigit()


def test_trace_is_a_plain_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["trace", "--help"], capsys)
    assert code == 0
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert re.search(r"perlinsos trace \[OPTIONS\] \{?ID\}?\s*$", usage), usage
    assert "COMMAND" not in usage


def test_help_is_written_in_whole_sentences() -> None:
    """Every command's and every visible option's help is a sentence: a capital (or the
    program's name) first, a full stop last."""
    root = typer.main.get_command(app)
    found = []

    def walk(command: typer.core.TyperCommand | typer.core.TyperGroup, path: str) -> None:
        texts = [("command", command.help or "")]
        for param in command.params:
            if getattr(param, "hidden", False) or param.name in ("help",):
                continue
            if param.name in ("install_completion", "show_completion"):
                continue
            texts.append((f"--{param.name}", getattr(param, "help", None) or ""))
        for what, text in texts:
            flat = " ".join(text.split())
            if not (
                flat.endswith((".", ")"))
                and (flat[:1].isupper() or flat.startswith(("perlinsos", "`")))
            ):
                found.append(f"{path} {what}: {flat!r}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root, "perlinsos")  # type: ignore[arg-type]
    assert not found, "\n".join(found)

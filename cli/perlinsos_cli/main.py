"""The `perlinsos` command: run the stack, run the cohort, and each service's commands."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from importlib.metadata import version

import asyncpg
import psutil
import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer's own click

from perlinsos_cli.bpjs.commands import app as bpjs_app
from perlinsos_cli.dlq import app as dlq_app
from perlinsos_cli.outbox import app as outbox_app
from perlinsos_cli.trace import show as trace_command
from perlinsos_devruntime.stack import EMBEDDED_TOPIC_PARTITIONS, Stack, StackEvent, Step
from perlinsos_eligibility.cli import app as eligibility_app
from perlinsos_notify.cli import app as notify_app
from perlinsos_premium.cli import app as premium_app
from perlinsos_premium.cli import finance_app
from perlinsos_registry.cli import app as registry_app
from perlinsos_registry.cli import intake_app
from perlinsos_shared.gc_tuning import tune_gc
from perlinsos_shared.operator import (
    BAD_ARGUMENTS,
    BROKER_HINT,
    CONNECTION_LOST,
    DATABASE_HINT,
    fail,
    reason,
)
from perlinsos_shared.settings import get_settings, remove_stack_file, write_stack_file

app = typer.Typer(
    help="perlinsos: Batam's social-protection programme for vulnerable workers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Docstrings are wrapped at 100 columns in the code; markdown joins their lines again
    # so help reads as whole sentences at any terminal width.
    rich_markup_mode="markdown",
)
app.add_typer(registry_app, name="registry")
app.add_typer(eligibility_app, name="eligibility")
app.add_typer(premium_app, name="premium")
app.add_typer(notify_app, name="notify")
app.add_typer(intake_app, name="intake")
app.add_typer(finance_app, name="finance")
app.add_typer(bpjs_app, name="bpjs")
app.command("trace", context_settings={"allow_interspersed_args": True})(trace_command)
app.add_typer(outbox_app, name="outbox")
app.add_typer(dlq_app, name="dlq")

# Piped or in CI logs Rich would assume 80 columns and cut the report's table.
console = Console() if sys.stdout.isatty() else Console(width=160)


def _version(value: bool) -> None:
    if value:
        print(f"perlinsos {version('perlinsos-cli')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    _show_version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version of perlinsos and exit.",
    ),
) -> None:
    """perlinsos: Batam's social-protection programme for vulnerable workers."""
    from perlinsos_cli.trace import setup_cli_tracing

    setup_cli_tracing()  # the agency side of submissions sent from here joins their traces


class _Stop(Exception):
    pass


def _install_signal_handlers() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _print_stack(stack: Stack) -> None:
    table = Table(title="perlinsos is up", show_header=True)
    table.add_column("part")
    table.add_column("where")
    kafka_kind = "embedded Tansu" if stack.kafka else "external"
    pg_kind = "embedded PostgreSQL" if stack.postgres else "external"
    table.add_row(f"Kafka ({kafka_kind})", stack.bootstrap_servers)
    table.add_row(f"PostgreSQL ({pg_kind})", _hide_password(stack.database_url))
    for svc in stack.services:
        table.add_row(
            f"service {svc.name}",
            f"{svc.health_url}/readyz  /metrics  log {svc.log_path}",
        )
    table.add_row("state directory", str(stack.state_dir.resolve()))
    table.add_row("SMS file sink", str(stack.settings.sms_file.resolve()))
    console.print(table)


def _hide_password(url: str) -> str:
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':')[0]}:***@{host}"
    return url


_EVENT_STYLE = {"exited": "red", "not live": "red", "restart failed": "red"}


def _show_event(event: StackEvent) -> None:
    style = _EVENT_STYLE.get(event.what, "yellow")
    console.print(f"[{style}]supervisor: {event.line()}[/{style}]", highlight=False)


def _start(stack: Stack) -> None:
    t0 = time.monotonic()
    born = psutil.Process().create_time()
    stack.timeline.append(Step("perlinsos command: interpreter and imports", born, time.time()))
    with console.status("starting broker, PostgreSQL and the four services..."):
        stack.start()
    write_stack_file(
        stack.settings, stack.bootstrap_servers, stack.logins.reader, stack.logins.services
    )
    stack.write_timeline(born)  # logs/startup.log: what the start waited for
    console.print(f"[green]ready in {time.monotonic() - t0:.1f}s[/green]")
    _print_stack(stack)
    # From here on a service, the broker or PostgreSQL that exits is started again.
    stack.on_event = _show_event
    stack.supervise()


@app.command()
def up(
    kafka_port: int = typer.Option(9092, help="The embedded broker's port."),
    pg_port: int = typer.Option(5433, help="The embedded PostgreSQL's port."),
    http_port: int = typer.Option(
        8081, help="The first of four ports for the services' health and metrics."
    ),
) -> None:
    """Start broker, PostgreSQL and the four services and keep them running (each restarted
    with backoff if it exits; an empty broker refilled from the outboxes) until Ctrl-C or
    SIGTERM. Restarts are printed and logged in logs/supervisor.log in the state directory."""
    stop = _install_signal_handlers()
    stack = Stack(
        get_settings(),
        kafka_port=kafka_port,
        pg_port=pg_port,
        http_port_base=http_port,
        topic_partitions=EMBEDDED_TOPIC_PARTITIONS,
    )
    try:
        _start(stack)
        console.print("running; Ctrl-C to stop")
        while not stop.wait(0.5):
            pass
    finally:
        with console.status("stopping..."):
            stack.stop()
            remove_stack_file(stack.settings)
        console.print("stopped")


@app.command()
def cohort(
    size: int = typer.Option(24_300, help="How many people the synthetic cohort has."),
    seed: int = typer.Option(2025, help="The random seed of the cohort."),
    fault_rate: float = typer.Option(
        0.03, help="The share of submissions with a deliberate fault."
    ),
    fresh: bool = typer.Option(
        True, help="Start from an empty state directory (embedded stack only)."
    ),
    kafka_port: int = typer.Option(9092, help="The embedded broker's port."),
    pg_port: int = typer.Option(5433, help="The embedded PostgreSQL's port."),
    http_port: int = typer.Option(
        8081, help="The first of four ports for the services' health and metrics."
    ),
    timeout: float = typer.Option(600, help="Seconds to wait for every outcome."),
) -> None:
    """The main job: start the stack, run the synthetic cohort through it, report, stop."""
    import asyncio

    from perlinsos_cli.cohort_run import generate, print_report, run_cohort

    settings = get_settings()
    embedded = not (settings.kafka_bootstrap_servers or settings.database_url)
    if fresh and embedded and settings.state_dir.exists():
        shutil.rmtree(settings.state_dir)
    stop = _install_signal_handlers()
    stack = Stack(
        settings,
        kafka_port=kafka_port,
        pg_port=pg_port,
        http_port_base=http_port,
        topic_partitions=EMBEDDED_TOPIC_PARTITIONS,
    )
    try:
        _start(stack)
        with console.status(f"generating {size:,} synthetic enrolments..."):
            subs = generate(size, seed, fault_rate)
        tune_gc()
        report = asyncio.run(
            run_cohort(stack.bootstrap_servers, stack.logins.reader, subs, console, timeout=timeout)
        )
        print_report(report, console)
        if stop.is_set():
            raise typer.Exit(130)
    finally:
        with console.status("stopping..."):
            stack.stop()
            remove_stack_file(stack.settings)
        console.print("stopped")


def main(argv: list[str] | None = None) -> None:
    """The `perlinsos` command. Every failure is one line on stderr: bad arguments exit 2
    (with the accepted values), a database or broker out of reach exits 1."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        status = app(args=argv, prog_name="perlinsos", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        raise SystemExit(BAD_ARGUMENTS) from None
    except UsageError as exc:
        where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        message = exc.format_message().replace("Value error, ", "").rstrip(".")
        fail(f"{message}{where}", BAD_ARGUMENTS)
    except typer.Abort:
        fail("aborted", 130)
    except asyncpg.UndefinedTableError as exc:
        fail(f"the database has no such table yet ({reason(exc)}): start the services "
             f"against it once (they create their tables), or point DATABASE_URL elsewhere")  # fmt: skip
    except CONNECTION_LOST as exc:
        # An operator command that lost the database or broker after reaching it.
        fail(f"the connection to the database or broker broke ({reason(exc)}); "
             f"{DATABASE_HINT}; {BROKER_HINT}")  # fmt: skip
    raise SystemExit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()

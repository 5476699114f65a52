"""`perlinsos trace ID`: print one enrolment's trace as a tree (embedded trace store).

ID is an agency's request id, a participant id, a decision id, an event id or a trace
id. Spans are read from `<state dir>/traces/*.jsonl`, where every service (and the CLI's
agency side) writes them when `OTEL_EXPORTER_OTLP_ENDPOINT` is not set; with it set, use
the collector's trace UI instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from opentelemetry import trace
from rich.console import Console
from rich.tree import Tree

from perlinsos_shared.operator import fail
from perlinsos_shared.settings import Settings, get_settings

SEARCHED_ATTRIBUTES = (
    "perlinsos.request_id",
    "perlinsos.participant_id",
    "perlinsos.decision_id",
    "messaging.message.id",
)


@dataclass
class SpanNode:
    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def start(self) -> int:
        return int(self.span.get("start_ns") or 0)


def trace_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "traces").glob("*.jsonl"))


def _lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as f:
            yield from f


def find_trace_ids(files: list[Path], ident: str) -> list[str]:
    """Trace ids whose spans carry `ident` as a searched id (or which are `ident`)."""
    found: dict[str, int] = {}
    for line in _lines(files):
        if ident not in line:  # cheap filter before parsing
            continue
        try:
            span = json.loads(line)
        except ValueError:
            continue
        attrs = span.get("attributes") or {}
        if span.get("trace_id") == ident or any(attrs.get(a) == ident for a in SEARCHED_ATTRIBUTES):
            tid = span["trace_id"]
            start = int(span.get("start_ns") or 0)
            found[tid] = min(found.get(tid, start), start)
    return sorted(found, key=lambda t: found[t])


def load_spans(files: list[Path], trace_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in _lines(files):
        # records start with {"trace_id": "<32 hex>": check before parsing
        head = line[:60]
        if not any(t in head for t in trace_ids):
            continue
        try:
            span = json.loads(line)
        except ValueError:
            continue
        if span.get("trace_id") in trace_ids:
            out[span["trace_id"]].append(span)
    return out


def build_tree(spans: list[dict[str, Any]]) -> list[SpanNode]:
    """Roots (spans whose parent is not in the store) with their children, by start time."""
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = node.span.get("parent_span_id")
        if parent and parent in nodes:
            nodes[parent].children.append(node)
        else:
            roots.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.start)
    roots.sort(key=lambda n: n.start)
    return roots


def _duration_ms(span: dict[str, Any]) -> float:
    start, end = span.get("start_ns"), span.get("end_ns")
    if not start or not end:
        return 0.0
    return (int(end) - int(start)) / 1e6


def describe(span: dict[str, Any], t0: int) -> str:
    """One line: service, operation, topic, offset from the trace start, duration, status."""
    attrs = span.get("attributes") or {}
    service = str(span.get("service") or "?").removeprefix("perlinsos-")
    parts = [f"[bold]{service}[/bold]", span.get("name", "?"), f"({span.get('kind', '?')})"]
    topic = attrs.get("messaging.destination.name")
    if topic and topic not in span.get("name", ""):
        parts.append(f"topic={topic}")
    for key in ("perlinsos.outcome", "perlinsos.funding_line", "sms.status", "http.status_code"):
        if key in attrs:
            parts.append(f"{key.split('.')[-1]}={attrs[key]}")
    if "perlinsos.coalesced_links" in attrs:
        parts.append(f"links={attrs['perlinsos.coalesced_links']}")
    start = int(span.get("start_ns") or t0)
    parts.append(f"+{(start - t0) / 1e6:.1f}ms")
    parts.append(f"{_duration_ms(span):.1f}ms")
    status = span.get("status", "UNSET")
    if status == "ERROR":
        why = span.get("status_description") or ""
        parts.append(f"[red]ERROR {why}[/red]")
    elif status == "OK":
        parts.append("[green]OK[/green]")
    for event in span.get("events") or []:
        if event.get("name") == "exception":
            ea = event.get("attributes") or {}
            parts.append(
                f"[red]{ea.get('exception.type', '')}: {ea.get('exception.message', '')}[/red]"
            )
    return " ".join(str(p) for p in parts)


def batch_subtrees(
    spans: list[dict[str, Any]], batch_spans: dict[str, list[dict[str, Any]]]
) -> dict[str, SpanNode]:
    """For each consumer span, the batch it was applied in (its SQL spans below it): the
    `perlinsos.batch` attribute names the batch span, which lives in the broker's trace."""
    out: dict[str, SpanNode] = {}
    for span in spans:
        ref = str((span.get("attributes") or {}).get("perlinsos.batch", ""))
        if "-" not in ref:
            continue
        tid, sid = ref.split("-", 1)
        for root in build_tree(batch_spans.get(tid, [])):
            found = _find(root, sid)
            if found is not None:
                out[span["span_id"]] = found
    return out


def _find(node: SpanNode, span_id: str) -> SpanNode | None:
    if node.span.get("span_id") == span_id:
        return node
    for child in node.children:
        hit = _find(child, span_id)
        if hit is not None:
            return hit
    return None


def batch_trace_ids(spans: list[dict[str, Any]]) -> set[str]:
    refs = (str((s.get("attributes") or {}).get("perlinsos.batch", "")) for s in spans)
    return {r.split("-", 1)[0] for r in refs if "-" in r}


def render(
    trace_id: str,
    spans: list[dict[str, Any]],
    *,
    with_db: bool = False,
    batches: dict[str, SpanNode] | None = None,
) -> Tree:
    shown = [s for s in spans if with_db or not _is_db(s)]
    t0 = min(int(s.get("start_ns") or 0) for s in shown) if shown else 0
    services = sorted({str(s.get("service", "?")).removeprefix("perlinsos-") for s in shown})
    tree = Tree(f"trace [cyan]{trace_id}[/cyan]: {len(shown)} spans across {', '.join(services)}")

    def add(branch: Tree, node: SpanNode, prefix: str = "") -> None:
        child = branch.add(prefix + describe(node.span, t0))
        batch = (batches or {}).get(node.span["span_id"])
        if batch is not None:
            add(child, batch, "[dim]batch[/dim] ")
        for c in node.children:
            add(child, c)

    for root in build_tree(shown):
        add(tree, root)
    return tree


def _is_db(span: dict[str, Any]) -> bool:
    attrs = span.get("attributes") or {}
    return "db.system" in attrs or "db.system.name" in attrs


def show(
    ident: str = typer.Argument(
        ...,
        metavar="ID",
        help="A request id, participant id, decision id, event id or trace id.",
    ),
    with_db: bool = typer.Option(
        False, "--db", help="Also show the batch each message was applied in, with its SQL."
    ),
    max_traces: int = typer.Option(
        5, min=1, help="Show at most this many traces (one person may have several)."
    ),
) -> None:
    """Print every trace that touches ID as a tree: service, operation, topic, timing, status."""
    settings = get_settings()
    console = Console()
    files = trace_files(settings.state_dir)
    if not files:
        fail(
            f"no trace store under {settings.state_dir / 'traces'}: set PERLINSOS_STATE_DIR to "
            "the stack's state directory (with OTEL_EXPORTER_OTLP_ENDPOINT set, spans go to "
            "the collector instead: use its trace UI)",
            1,
        )
    trace_ids = find_trace_ids(files, ident)
    if not trace_ids:
        fail(f"no span mentions {ident!r}", 1)
    spans = load_spans(files, set(trace_ids[:max_traces]))
    batches: dict[str, SpanNode] = {}
    if with_db:
        wanted = set().union(*(batch_trace_ids(v) for v in spans.values()))
        batch_spans = load_spans(files, wanted) if wanted else {}
        for tid in trace_ids[:max_traces]:
            batches.update(batch_subtrees(spans.get(tid, []), batch_spans))
    for tid in trace_ids[:max_traces]:
        console.print(render(tid, spans.get(tid, []), with_db=with_db, batches=batches))
    if len(trace_ids) > max_traces:
        console.print(f"... and {len(trace_ids) - max_traces} more traces")


def setup_cli_tracing(settings: Settings | None = None) -> None:
    """Record the CLI's own spans (the agency side of a submission) like a service does:
    to `<state dir>/traces/agency.jsonl`, or by OTLP when the endpoint is set."""
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    from perlinsos_shared.telemetry import setup_tracing

    setup_tracing("agency", settings or get_settings())

"""One enrolment is one trace across every service; no personal data in spans, logs or
metric labels.

Real broker, real PostgreSQL, the four services as processes. The agency side (this test
process) records its producer spans in memory; the services write theirs to the
embedded trace store under the state directory, which `perlinsos trace` reads, or, in the
personal-data test, two of them send theirs by OTLP/HTTP to a receiver in this process
(the path a deployment with a collector takes). Positive controls show that the scan
finds a NIK, name and phone in a line, in a span received by OTLP unscrubbed, and in a
metric label.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from perlinsos_cli.trace import build_tree, find_trace_ids, load_spans, render, trace_files
from perlinsos_devruntime.agency import Listener, settled_run
from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_devruntime.stack import Stack
from perlinsos_shared.settings import Settings
from perlinsos_shared.trace_export import ScrubbingSpanExporter, span_record

pytestmark = pytest.mark.flow

SERVICES = {"perlinsos-registry", "perlinsos-eligibility", "perlinsos-premium", "perlinsos-notify"}
_agency_spans = InMemorySpanExporter()


def _record_agency_spans() -> InMemorySpanExporter:
    """The test process plays the agency: its producer spans go to memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_perlinsos_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_agency_spans))
        provider._perlinsos_test_exporter = True  # type: ignore[attr-defined]
    _agency_spans.clear()
    return _agency_spans


@pytest.fixture(autouse=True)
def _services_export_spans_promptly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # read by the services at start


async def _run(stack: Stack, subs: list[Submission]) -> Listener:
    async with settled_run(stack.bootstrap_servers, subs) as listener:
        return listener


def _store(state_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in trace_files(state_dir):
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_one_enrolment_is_one_trace_across_every_service(
    stack: Stack, settings: Settings
) -> None:
    agency = _record_agency_spans()
    sub = next(s for s in generate_cohort(size=40, seed=71, fault_rate=0.0) if s.fault is None)
    listener = await _run(stack, [sub])
    decision = listener.outcomes.decisions[(sub.agency, sub.request_id)]
    assert decision["outcome"] == "eligible"

    sent: list[ReadableSpan] = [
        s
        for s in agency.get_finished_spans()
        if s.attributes.get("perlinsos.request_id") == sub.request_id  # type: ignore[union-attr]
    ]
    assert len(sent) == 1
    trace_id = format(sent[0].context.trace_id, "032x")  # type: ignore[union-attr]

    # wait for the services' exporters: every service's consumer span of this trace
    deadline = time.monotonic() + 30
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = [s for s in _store(stack.state_dir) if s["trace_id"] == trace_id]
        consumers = {s["service"] for s in spans if s["kind"] == "CONSUMER"}
        exported = {s["span_id"] for s in spans}
        parents = {s["parent_span_id"] for s in spans if s["kind"] == "CONSUMER"}
        if SERVICES <= consumers and len(parents - exported) <= 1:  # the agency's span
            break
        await asyncio.sleep(0.3)
    assert SERVICES <= {s["service"] for s in spans if s["kind"] == "CONSUMER"}, spans

    # the submission's and the participant's spans are all in this one trace
    ids = (sub.request_id, decision["participant_id"], decision["decision_id"])
    assert find_trace_ids(trace_files(stack.state_dir), sub.request_id) == [trace_id]
    for ident in ids:
        assert trace_id in find_trace_ids(trace_files(stack.state_dir), ident)

    # registry's consumer span is the child of the agency's producer span; every other
    # consumer span is the child of the consumer span, in another service, whose
    # handling wrote the message it consumes (the relay sends under the stored context)
    agency_record = span_record(sent[0])
    assert agency_record is not None
    by_id = {s["span_id"]: s for s in [*spans, agency_record]}
    registry_consumer = next(s for s in spans if s["service"] == "perlinsos-registry")
    assert registry_consumer["parent_span_id"] == agency_record["span_id"]
    for consumer in (s for s in spans if s["kind"] == "CONSUMER" and s is not registry_consumer):
        parent = by_id[consumer["parent_span_id"]]
        assert parent["kind"] == "CONSUMER", (consumer["name"], parent["name"])
        assert parent["service"] != consumer["service"], (consumer["name"], parent["name"])
    hops = {
        (by_id[s["parent_span_id"]]["service"], s["service"])
        for s in spans
        if s["kind"] == "CONSUMER"
    }
    assert ("perlinsos-registry", "perlinsos-eligibility") in hops
    assert ("perlinsos-eligibility", "perlinsos-notify") in hops
    # one tree: the agency's span is the single root
    roots = build_tree([*spans, agency_record])
    assert [r.span["span_id"] for r in roots] == [agency_record["span_id"]]
    assert "registry" in str(render(trace_id, spans).label)

    # metrics, liveness and readiness on each service's port
    for svc in stack.services:
        assert _get(svc.health_url + "/livez")[0] == 200
        assert _get(svc.health_url + "/readyz")[0] == 200
        status, text = _get(svc.health_url + "/metrics")
        assert status == 200
        assert "process_resident_memory_bytes" in text
        assert re.search(r"perlinsos_messages_consumed_total\{topic=\"[a-z.\-0-9]+\"\} [1-9]", text)
    registry = next(s for s in stack.services if s.name == "registry")
    text = _get(registry.health_url + "/metrics")[1]
    assert 'perlinsos_messages_produced_total{topic="registry.participants.v1"}' in text
    assert 'perlinsos_consumer_lag{partition="' in text


def _phone_spellings(raw: str) -> set[str]:
    out = {raw}
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        return out
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    national = str(number.national_number)
    return out | {e164, e164.lstrip("+"), "0" + national, national}


class PersonalDataScanner:
    """Finds any NIK, full name or phone (raw, E.164, local) of a cohort in text lines."""

    def __init__(self, subs: list[Submission]) -> None:
        self.niks = {s.data["nik"] for s in subs if isinstance(s.data.get("nik"), str)}
        self.phones: set[str] = set()
        for s in subs:
            if isinstance(s.data.get("phone"), str):
                self.phones |= _phone_spellings(s.data["phone"])
        self.phone_digits = {re.sub(r"\D", "", p) for p in self.phones}
        self.phone_digits = {p for p in self.phone_digits if len(p) >= 9}
        self.names: dict[str, list[tuple[str, ...]]] = {}
        for s in subs:
            words = tuple(re.findall(r"[a-z']+", str(s.data.get("full_name", "")).lower()))
            if words:
                self.names.setdefault(words[0], []).append(words)

    def find(self, line: str) -> list[str]:
        hits = []
        for run in re.findall(r"\d+", line):
            if run in self.niks:
                hits.append(f"NIK {run}")
            if run in self.phone_digits:
                hits.append(f"phone {run}")
        hits += [f"phone {p}" for p in self.phones if len(p) >= 9 and p in line]
        words = re.findall(r"[a-z']+", line.lower())
        for i, w in enumerate(words):
            for name in self.names.get(w, ()):
                if tuple(words[i : i + len(name)]) == name and len(name) >= 2:
                    hits.append(f"name {' '.join(name)}")
        return hits


class OtlpReceiver:
    """An OTLP/HTTP trace receiver in this process (POST /v1/traces, protobuf, as a
    collector takes it): every span received, decoded to JSON, with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    service = next(
                        (a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"), "?",
                    )  # fmt: skip
                    for ss in rs.scope_spans:
                        receiver.spans += [
                            (service, MessageToJson(sp, indent=None)) for sp in ss.spans
                        ]
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def of(self, service: str) -> list[str]:
        return [span for name, span in self.spans if name == service]


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def otlp_stack(settings: Settings, otlp: OtlpReceiver) -> Iterator[Stack]:
    """The four services: registry and premium send their spans by OTLP (to `otlp`), as a
    deployment does; eligibility and notify write them to the embedded trace store."""
    s = Stack(settings, http_port_base=0)
    s.start_infrastructure()
    try:
        s.start_services(("registry", "premium"), extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint})  # fmt: skip
        s.start_services(("eligibility", "notify"))
        yield s
    finally:
        s.stop()


def _export_by_otlp(endpoint: str, service: str, scrubbing: bool, data: dict[str, Any]) -> None:
    """One span carrying `data` as attributes and in its name, exported by OTLP the way a
    service does (`scrubbing`) or not (the positive control)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    inner = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    exporter = ScrubbingSpanExporter(inner) if scrubbing else inner
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("control").start_as_current_span(f"enrol {data['full_name']}") as sp:
        sp.set_attributes({k: str(v) for k, v in data.items() if isinstance(v, str)})
    provider.shutdown()


async def test_no_personal_data_in_spans_logs_or_metric_labels_of_a_1000_submission_flow(
    otlp_stack: Stack, otlp: OtlpReceiver
) -> None:
    stack = otlp_stack
    agency = _record_agency_spans()
    subs = generate_cohort(size=1000, seed=1007, fault_rate=0.05)
    scanner = PersonalDataScanner(subs)
    one = subs[0].data
    control = f'{{"x": "{one["nik"]}", "y": "{one["full_name"]}", "z": "{one["phone"]}"}}'
    assert len(scanner.find(control)) >= 3  # the scanner does find what it looks for
    # ... in what the OTLP receiver decodes, and in a metric label. The scrubbing
    # exporter masks what has a shape (NIK, phone); a name has none, so services never
    # put one in a span (only ids: `correlation_attributes`), which the scan below checks
    await asyncio.to_thread(_export_by_otlp, otlp.endpoint, "control-raw", False, one)
    shaped = {"nik": one["nik"], "phone": one["phone"], "full_name": "Peserta"}
    await asyncio.to_thread(_export_by_otlp, otlp.endpoint, "control-scrubbed", True, shaped)
    assert len(scanner.find(" ".join(otlp.of("control-raw")))) >= 3
    assert len(otlp.of("control-scrubbed")) == 1
    assert scanner.find(" ".join(otlp.of("control-scrubbed"))) == []
    assert scanner.find(f'perlinsos_x_total{{nik="{one["nik"]}"}} 1.0')

    listener = await _run(stack, subs)
    assert len(listener.outcomes.decisions) > 900
    # metric labels, scraped from every running service after the flow
    lines: list[tuple[str, str]] = []
    for svc in stack.services:
        status, text = _get(svc.health_url + "/metrics")
        assert status == 200 and "perlinsos_messages_consumed_total{" in text, svc.name
        lines += [(f"{svc.name}/metrics", line) for line in text.splitlines()]
    stack.stop_services()  # each service flushes its spans and logs on the way out

    for path in trace_files(stack.state_dir):
        lines += [(path.name, line) for line in path.read_text().splitlines()]
    stored = {json.loads(line)["service"] for name, line in lines if name.endswith(".jsonl")}
    assert stored == {"perlinsos-eligibility", "perlinsos-notify"}
    by_otlp = {name for name, _ in otlp.spans} - {"control-raw", "control-scrubbed"}
    assert by_otlp == {"perlinsos-registry", "perlinsos-premium"}
    lines += [(f"otlp:{name}", span) for name, span in otlp.spans if name in by_otlp]
    span_count = sum(1 for name, _ in lines if name.endswith(".jsonl") or name.startswith("otlp:"))
    assert span_count > 5 * len(subs)  # spans of every hop were really scanned
    for path in sorted((stack.state_dir / "logs").glob("*.log")):
        lines += [(path.name, line) for line in path.read_text(errors="replace").splitlines()]
    for span in agency.get_finished_spans():
        lines.append(("agency", json.dumps(span_record(span))))

    leaks = [(name, hit) for name, line in lines for hit in scanner.find(line)]
    assert leaks == [], leaks[:20]

    # every log line is one JSON object with a level and a service
    for name, line in lines:
        if name.endswith(".log") and line.strip():
            record = json.loads(line)
            assert {"level", "service", "message"} <= record.keys(), line
    # the trace store still answers for a person's request
    tid = find_trace_ids(trace_files(stack.state_dir), subs[1].request_id)
    assert tid and load_spans(trace_files(stack.state_dir), set(tid))

"""The deployment files agree with the code: compose, Dockerfiles, Kubernetes, Grafana.

No Docker engine or cluster runs here, so these tests parse what cannot be run and
compare it with the code's own truth: the topic catalogue (`perlinsos_shared.topics`),
the settings (`perlinsos_shared.settings.Settings`) and the metrics instruments. They
iterate over the catalogue, never over a list written here, so a new topic needs only
`python -m perlinsos_shared.topics_init --strimzi > deploy/k8s/base/kafka-topics.yaml`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from perlinsos_registry.agencies import DEFAULT_MAP
from perlinsos_shared import access
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import CATALOGUE, DLQ_SUFFIX, agency_replies_topic
from perlinsos_shared.topics_init import strimzi_topics, topic_specs

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
K8S_PRODUCTION = ROOT / "deploy" / "k8s" / "overlays" / "production"
SERVICES = ("registry", "eligibility", "premium", "notify")
CONTAINER_PORT = 8080  # PERLINSOS_METRICS_PORT chosen for containers

# Standard OpenTelemetry SDK variables a deployment may set beside the Settings fields.
OTEL_STANDARD = {
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
}
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "ACCOUNT_SID")


# --- helpers -------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads (alias or field name, upper case)."""
    return {(f.alias or name).upper() for name, f in Settings.model_fields.items()}


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """What a service would make of this environment (raises on a value it rejects)."""
    known = settings_env_names()
    values: dict[str, Any] = {k: v for k, v in env.items() if k in known}
    by_upper = {(f.alias or n).upper(): (f.alias or n) for n, f in Settings.model_fields.items()}
    return Settings(**{by_upper[k]: v for k, v in values.items()})


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def dotenv_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` against an env file."""

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("-"):
            return arg
        raise AssertionError(f"${{{name}}} has no value in .env.example")

    return _INTERPOLATION.sub(repl, value)


def consumed_partitions(service: str) -> list[int]:
    return [t.partitions for t in CATALOGUE if service in t.consumers]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(doc, dict)
    return doc


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment") or {}
    assert isinstance(env, dict), f"{name}: environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def kafka_properties() -> dict[str, str]:
    """The broker configuration deploy/kafka/start.sh writes (shell variables as named)."""
    text = (ROOT / "deploy" / "kafka" / "start.sh").read_text(encoding="utf-8")
    block = text.split("<<PROPERTIES\n", 1)[1].split("\nPROPERTIES", 1)[0]
    out = {}
    for line in block.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def healthcheck_port(test: list[str] | str) -> int:
    text = test if isinstance(test, str) else " ".join(test)
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/readyz", text)
    assert m, f"health check probes /readyz: {text}"
    return int(m.group(1))


# --- the topic catalogue as deployed ---------------------------------------------------


def test_topic_specs_cover_the_catalogue_with_its_partitions_retention_and_compaction() -> None:
    specs = {s.name: s for s in topic_specs()}
    assert len(specs) == 2 * len(CATALOGUE)
    for t in CATALOGUE:
        spec, dlq = specs[t.name], specs[t.name + DLQ_SUFFIX]
        assert spec.partitions == t.partitions
        assert spec.config["cleanup.policy"] == ("compact" if t.compacted else "delete")
        expected_ms = -1 if t.retention_days < 0 else t.retention_days * 86_400_000
        assert int(spec.config["retention.ms"]) == expected_ms
        assert dlq.partitions == 1
        assert dlq.config["cleanup.policy"] == "delete"
    assert specs["premium.summaries.v1"].config["cleanup.policy"] == "compact"


def test_strimzi_kafka_topics_match_the_catalogue() -> None:
    path = K8S_BASE / "kafka-topics.yaml"
    committed = load_yaml_all(path)
    expected = strimzi_topics(topic_specs())
    by_name = {d["metadata"]["name"]: d for d in committed}
    hint = "regenerate: uv run --frozen python -m perlinsos_shared.topics_init --strimzi"
    assert set(by_name) == {d["metadata"]["name"] for d in expected}, hint
    for want in expected:
        have = by_name[want["metadata"]["name"]]
        assert have["kind"] == "KafkaTopic"
        assert have["spec"]["topicName"] == want["spec"]["topicName"], hint
        assert have["spec"]["partitions"] == want["spec"]["partitions"], hint
        assert have["spec"]["config"] == want["spec"]["config"], hint
        assert have["metadata"]["labels"]["strimzi.io/cluster"] == "perlinsos"


# --- docker-compose.yml ----------------------------------------------------------------


def test_vendored_compose_schema_is_the_recorded_file() -> None:
    digest = hashlib.sha256((DATA / "compose-spec.json").read_bytes()).hexdigest()
    assert digest in (DATA / "compose-spec.SOURCE.md").read_text(encoding="utf-8")


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["registry"]["depends_on"]["kafka"]["condition"] = "service_happy"
    broken["services"]["notify"]["restart_policy"] = "always"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_compose_runs_the_infrastructure_the_design_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    properties = kafka_properties()
    assert properties["process.roles"] == "broker,controller"  # KRaft, no ZooKeeper
    assert properties["auto.create.topics.enable"] == "false"
    cluster_id = kafka["environment"]["CLUSTER_ID"]  # KRaft: a UUID, base64url, unpadded
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert services["postgres"]["image"].startswith("postgres:")
    assert "opentelemetry-collector" in services["otel-collector"]["image"]
    assert services["jaeger"]["image"].startswith("jaegertracing/")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    for name in ("kafka", "postgres", "prometheus", "grafana", "otel-collector", "jaeger"):
        assert "test" in services[name]["healthcheck"], f"{name} has a health check"


def test_collector_and_jaeger_are_probed_and_waited_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    # The collector image is distroless: its health check runs the wget its Dockerfile adds,
    # against the health_check extension the collector configuration enables.
    dockerfile = (ROOT / collector["build"]["context"] / "Dockerfile").read_text(encoding="utf-8")
    probe = collector["healthcheck"]["test"]
    assert probe[0] == "CMD" and f"COPY --from=probe /bin/busybox {probe[1]}" in dockerfile
    assert re.search(r"^FROM otel/opentelemetry-collector-contrib:\S+$", dockerfile, flags=re.M)
    config = load_yaml(ROOT / "deploy" / "otel-collector" / "config.yaml")
    port = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert "health_check" in config["service"]["extensions"]
    assert f"http://127.0.0.1:{port}/" in probe
    assert "http://127.0.0.1:14269/" in jaeger["healthcheck"]["test"]  # Jaeger's admin port
    assert collector["depends_on"]["jaeger"]["condition"] == "service_healthy"
    for svc in SERVICES:
        assert services[svc]["depends_on"]["otel-collector"]["condition"] == "service_healthy"


def test_topic_init_job_runs_the_codes_own_topic_creation(compose: dict[str, Any]) -> None:
    job = compose["services"]["topics-init"]
    command = job["command"]
    assert command[:3] == ["python", "-m", "perlinsos_shared.topics_init"]
    assert importlib.util.find_spec("perlinsos_shared.topics_init") is not None
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert job["restart"] == "no"
    bootstrap = job["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == service_env(compose, "registry")["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.mark.parametrize("svc", SERVICES)
def test_compose_service_is_built_from_its_dockerfile_and_waits_for_its_dependencies(
    compose: dict[str, Any], svc: str
) -> None:
    service = compose["services"][svc]
    build = service["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "Dockerfile"  # the one recipe, parameterised
    assert build["args"] == {"SERVICE": svc}
    assert (ROOT / build["dockerfile"]).is_file()
    conditions = {k: v["condition"] for k, v in service["depends_on"].items()}
    assert conditions["kafka"] == "service_healthy"
    assert conditions["postgres"] == "service_healthy"
    assert conditions["topics-init"] == "service_completed_successfully"
    # Scale out with `docker compose up --scale <svc>=N`: nothing may pin one container.
    assert "container_name" not in service
    assert "ports" not in service


@pytest.mark.parametrize("svc", SERVICES)
def test_compose_environment_is_what_the_settings_read(compose: dict[str, Any], svc: str) -> None:
    env = service_env(compose, svc)
    unknown = set(env) - settings_env_names() - OTEL_STANDARD
    assert not unknown, f"{svc}: variables no setting reads: {sorted(unknown)}"
    resolved = {k: interpolate(v, dotenv_example()) for k, v in env.items()}
    settings = settings_from_env(resolved)
    assert settings.metrics_port == CONTAINER_PORT
    assert settings.otel_exporter_otlp_endpoint
    assert resolved["OTEL_SERVICE_NAME"] == f"perlinsos-{svc}"

    # The health check and Prometheus use the port the service serves on.
    assert healthcheck_port(compose["services"][svc]["healthcheck"]["test"]) == CONTAINER_PORT
    assert str(CONTAINER_PORT) in [str(p) for p in compose["services"][svc]["expose"]]

    # Addresses point at the compose services that exist, on the ports they listen on.
    host, _, port = (settings.kafka_bootstrap_servers or "").partition(":")
    assert host in compose["services"]
    assert f"BROKER://{host}:{port}" in kafka_properties()["advertised.listeners"].split(",")
    db = urlsplit(settings.database_url or "")
    pg_env = compose["services"]["postgres"]["environment"]
    assert db.hostname in compose["services"] and db.port == 5432
    assert db.username == f"perlinsos_{svc}", "its own login role, never the superuser"
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]
    otlp = urlsplit(settings.otel_exporter_otlp_endpoint or "")
    assert otlp.hostname in compose["services"] and otlp.port == 4318


def test_every_compose_variable_is_in_env_example_and_no_secret_is_committed(
    compose: dict[str, Any],
) -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(_INTERPOLATION.findall(text))
    example = dotenv_example()
    missing = {name for name, _op, _arg in used} - set(example)
    assert not missing, f"add to .env.example: {sorted(missing)}"

    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert str(value).startswith("${"), f"{name}.{key} must come from .env"
    for key, value in example.items():
        if any(word in key for word in SECRET_WORDS) and value:
            assert "change-me" in value or set(value) <= set("ACx+X0123456789"), key
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_observability_wiring_matches_across_compose_collector_and_prometheus(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for svc in ("otel-collector", "prometheus", "grafana"):
        for volume in services[svc].get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{svc} mounts {source}"

    collector = load_yaml(ROOT / "deploy" / "otel-collector" / "config.yaml")
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipelines = collector["service"]["pipelines"]
    for pipeline in pipelines.values():
        for part in ("receivers", "processors", "exporters"):
            for name in pipeline.get(part, []):
                assert name in collector[part], f"{part} {name} is configured"
    jaeger = collector["exporters"][pipelines["traces"]["exporters"][0]]["endpoint"]
    assert jaeger.split(":")[0] in services
    prom_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert "prometheus" in pipelines["metrics"]["exporters"]

    prometheus = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    targets = jobs["otel-collector"]["static_configs"][0]["targets"]
    assert targets == [f"otel-collector:{prom_port}"]
    dns = jobs["perlinsos-services"]["dns_sd_configs"][0]
    assert set(dns["names"]) == set(SERVICES)
    assert dns["port"] == CONTAINER_PORT


# --- Dockerfiles -----------------------------------------------------------------------


def workspace_members() -> list[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(
            str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml")
        )
    return members


def test_one_dockerfile_is_multi_stage_uv_locked_non_root_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not list(ROOT.glob("services/*/Dockerfile")), "one recipe for every service"
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.M | re.I)
    assert len(stages) >= 3 and stages[-1] == "runtime", stages
    # SERVICE is declared before the first FROM and again in each stage that reads it
    assert re.search(r"^ARG SERVICE$", text.split("FROM", 1)[0], flags=re.M)
    for stage in ("build", "runtime"):
        body = text.split(f"AS {stage}", 1)[1].split("\nFROM ", 1)[0]
        assert re.search(r"^ARG SERVICE$", body, flags=re.M), stage
    assert "COPY uv.lock" in text
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines as one
    syncs = re.findall(r"^RUN .*?uv sync (.*)$", joined, flags=re.M)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert all('--package "perlinsos-${SERVICE}"' in s for s in syncs)
    assert "COPY services/${SERVICE} services/${SERVICE}" in text
    # uv reads the whole workspace: every member's pyproject.toml goes into the build.
    for member in workspace_members():
        assert f"COPY {member}/pyproject.toml {member}/" in text, member
    assert "COPY --from=build /app/.venv /app/.venv" in text
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert healthcheck_port(text.split("HEALTHCHECK", 1)[1].split("\n\n")[0]) == CONTAINER_PORT
    assert re.search(rf"^EXPOSE\s+{CONTAINER_PORT}\b", text, flags=re.M)
    assert f"PERLINSOS_METRICS_PORT={CONTAINER_PORT}" in text
    assert "OTEL_SERVICE_NAME=perlinsos-${SERVICE}" in text
    cmd = re.findall(r"^CMD\s+(\[.*\])", text, flags=re.M)
    assert json.loads(cmd[-1]) == ["perlinsos-service"]
    assert (
        'exec python -m "perlinsos_%s"' in text
        and '"$SERVICE" > /usr/local/bin/perlinsos-service' in text
    )


@pytest.mark.parametrize("svc", SERVICES)
def test_every_service_the_build_argument_names_runs_as_a_module(svc: str) -> None:
    assert (ROOT / "services" / svc / "pyproject.toml").is_file()
    assert importlib.util.find_spec(f"perlinsos_{svc}.__main__") is not None


def test_dockerignore_keeps_secrets_and_local_state_out_of_images() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".env", "**/.venv", ".perlinsos", "**/.git"):
        assert pattern in lines


# --- Kubernetes ------------------------------------------------------------------------


def base_resources() -> list[dict[str, Any]]:
    kustomization = load_yaml(K8S_BASE / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = K8S_BASE / resource
        assert path.is_file(), f"kustomization lists {resource}"
        docs += load_yaml_all(path)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name}"
    return found[0]


def test_k8s_configmap_holds_only_settings_the_code_reads_and_no_secret() -> None:
    docs = base_resources()
    config = find(docs, "ConfigMap", "perlinsos-config")["data"]
    unknown = set(config) - settings_env_names() - OTEL_STANDARD
    assert not unknown, sorted(unknown)
    assert not [k for k in config if any(w in k for w in SECRET_WORDS)]
    assert settings_from_env(config).metrics_port == CONTAINER_PORT
    assert not [d for d in docs if d["kind"] == "Secret"], "secrets are created, not committed"


@pytest.mark.parametrize("svc", SERVICES)
def test_k8s_service_has_deployment_probes_resources_service_and_autoscaler(svc: str) -> None:
    docs = base_resources()
    name = f"perlinsos-{svc}"
    config = find(docs, "ConfigMap", "perlinsos-config")["data"]
    port = int(config["PERLINSOS_METRICS_PORT"])

    deployment = find(docs, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", f"perlinsos_{svc}"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    env_from = {next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert env_from == {"perlinsos-config", f"perlinsos-{svc}-secrets"}, "its own Secret"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_SERVICE_NAME"] == name
    assert not set(env) - settings_env_names() - OTEL_STANDARD - {"POD_NAME"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert container["resources"]["limits"]["memory"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port

    service = find(docs, "Service", name)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    hpa = find(docs, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    # Past the partition count of what it consumes, a new instance would sit idle.
    partitions = consumed_partitions(svc)
    assert partitions, f"{svc} consumes a catalogue topic"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"] <= max(partitions)


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_k8s_base_builds_with_kustomize() -> None:
    rendered = kustomize(K8S_BASE)
    kinds = [d["kind"] for d in rendered]
    assert kinds.count("Deployment") == kinds.count("HorizontalPodAutoscaler") == len(SERVICES)
    assert kinds.count("KafkaTopic") == 2 * len(CATALOGUE) + len(AGENCIES)


def test_k8s_production_overlay_keeps_the_catalogue_and_hardens_the_base() -> None:
    rendered = kustomize(K8S_PRODUCTION)
    assert {d["metadata"].get("namespace") for d in rendered if d["kind"] != "Namespace"} == {
        "perlinsos"
    }
    topics = {d["spec"]["topicName"]: d["spec"] for d in rendered if d["kind"] == "KafkaTopic"}
    for spec in topic_specs():
        assert topics[spec.name]["partitions"] == spec.partitions
        assert topics[spec.name]["replicas"] == 3
        for key, value in spec.config.items():
            assert topics[spec.name]["config"][key] == value
    config = next(
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "perlinsos-config"
    )["data"]
    assert not set(config) - settings_env_names() - OTEL_STANDARD
    settings = settings_from_env(config)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.metrics_port == CONTAINER_PORT
    for d in rendered:
        if d["kind"] == "HorizontalPodAutoscaler":
            assert d["spec"]["minReplicas"] >= 2
        if d["kind"] == "Deployment":
            mounts = d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            ca_dir = str(settings.kafka_ssl_cafile).rsplit("/", 1)[0]
            assert ca_dir in [m["mountPath"] for m in mounts]
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in rendered
        if d["kind"] == "PodDisruptionBudget"
    }
    assert budgets == {f"perlinsos-{s}" for s in SERVICES}


# --- Grafana ---------------------------------------------------------------------------


def code_instrument_names() -> set[str]:
    """Prometheus base names of every OpenTelemetry instrument the code creates."""
    pattern = re.compile(r"create_[a-z_]+\(\s*\"([a-z0-9_.]+)\"")
    names: set[str] = set()
    roots = [ROOT / "shared" / "perlinsos_shared"] + [
        ROOT / "services" / s / f"perlinsos_{s}" for s in SERVICES
    ]
    for root in roots:
        for path in root.rglob("*.py"):
            names.update(n.replace(".", "_") for n in pattern.findall(path.read_text("utf-8")))
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_grafana_dashboard_is_provisioned_and_shows_what_operators_watch() -> None:
    datasources = load_yaml(ROOT / "deploy/grafana/provisioning/datasources/perlinsos.yaml")
    uids = {d["uid"] for d in datasources["datasources"]}
    provider = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/perlinsos.yaml")
    path = provider["providers"][0]["options"]["path"]
    compose = load_yaml(ROOT / "docker-compose.yml")
    mounts = [str(v) for v in compose["services"]["grafana"]["volumes"]]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/perlinsos.json").read_text("utf-8"))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("consumed", "lag", "dead letters", "outbox", "liability"):
        assert topic in titles, f"a panel on {topic}"

    instruments = code_instrument_names()
    suffix = re.compile(r"^(?:_[a-z]+)?(?:_total|_bucket|_sum|_count)?$")
    for title, expr in dashboard_exprs(dashboard):
        metrics = re.findall(r"\bperlinsos_[a-z0-9_]+", expr)
        assert metrics, f"{title}: queries a perlinsos metric"
        for metric in metrics:
            ok = any(
                metric.startswith(base) and suffix.match(metric[len(base) :])
                for base in instruments
            )
            assert ok, f"{title}: {metric} is no instrument of the code"


# --- least privilege: database logins, broker users and ACLs ----------------------------

AGENCIES = list(DEFAULT_MAP)  # the agencies the deployment files are generated for


def test_compose_kafka_authenticates_every_client_and_denies_what_no_acl_allows() -> None:
    props = kafka_properties()
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    listeners = dict(
        (name, address)
        for name, _, address in (x.partition("://") for x in props["listeners"].split(","))
    )
    for name, protocol in protocols.items():
        if name == props["controller.listener.names"]:
            assert listeners[name].startswith("127.0.0.1:"), "controller on loopback only"
        else:
            assert protocol.startswith("SASL_"), f"{name} authenticates its clients"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert set(props["super.users"].split(";")) == {"User:admin", "User:ANONYMOUS"}


def test_compose_acls_are_the_codes_own() -> None:
    committed = (ROOT / "deploy" / "kafka" / "acls.txt").read_text(encoding="utf-8")
    rules = [line for line in committed.splitlines() if line and not line.startswith("#")]
    hint = "regenerate: uv run --frozen python -m perlinsos_shared.access --kafka-acls " + " ".join(
        AGENCIES
    )
    assert rules == access.kafka_acl_commands(AGENCIES), hint


def test_compose_gives_each_service_its_own_logins_and_nothing_the_superuser_holds(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    secrets_of: dict[str, set[str]] = {}
    for svc in SERVICES:
        env = service_env(compose, svc)
        assert env["KAFKA_SASL_USERNAME"] == access.service_user(svc)
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        secrets_of[svc] = set(
            _INTERPOLATION.findall(env["DATABASE_URL"] + env["KAFKA_SASL_PASSWORD"])
        )
        assert "POSTGRES_PASSWORD" not in {n for n, _, _ in secrets_of[svc]}
        assert "KAFKA_ADMIN_PASSWORD" not in {n for n, _, _ in secrets_of[svc]}
        conditions = services[svc]["depends_on"]
        assert conditions["db-init"]["condition"] == "service_completed_successfully"
        assert conditions["kafka-access"]["condition"] == "service_completed_successfully"
    for a, b in ((a, b) for a in SERVICES for b in SERVICES if a < b):
        assert not secrets_of[a] & secrets_of[b], f"{a} and {b} share a secret"

    db_init = services["db-init"]
    assert db_init["command"] == ["python", "-m", "perlinsos_shared.db_roles"]
    assert importlib.util.find_spec("perlinsos_shared.db_roles") is not None
    init_env = db_init["environment"]
    for svc in SERVICES:
        own = next(
            n for n, _, _ in _INTERPOLATION.findall(service_env(compose, svc)["DATABASE_URL"])
        )
        assert f"${{{own}" in init_env[f"PERLINSOS_DB_PASSWORD_{svc.upper()}"]
    assert "POSTGRES_PASSWORD" in init_env["PERLINSOS_DB_ADMIN_URL"]

    access_env = services["kafka-access"]["environment"]
    users = set(re.findall(r"User:([a-z0-9-]+)", (ROOT / "deploy/kafka/acls.txt").read_text()))
    assert users == set(access.principals(AGENCIES))
    for user in users:
        assert f"KAFKA_PASSWORD_{user.upper().replace('-', '_')}" in access_env, user
    for svc in SERVICES:
        password = service_env(compose, svc)["KAFKA_SASL_PASSWORD"]
        assert f"KAFKA_PASSWORD_{access.service_user(svc).upper().replace('-', '_')}" in password


def test_each_principal_may_do_only_its_part() -> None:
    rules = access.principals(AGENCIES)
    registry = rules[access.service_user("registry")]
    assert access.allowed(registry, "topic", "registry.intake.v1", "Read")
    assert access.allowed(registry, "topic", agency_replies_topic("DISHUB"), "Write")
    assert not access.allowed(registry, "topic", "eligibility.decisions.v1", "Read")
    notify = rules[access.service_user("notify")]
    assert not access.allowed(notify, "topic", "registry.participants.v1", "Read")  # NIKs
    assert not access.allowed(notify, "topic", "eligibility.decisions.v1", "Write")
    for agency in AGENCIES:
        mine = rules[access.agency_user(agency)]
        assert access.allowed(mine, "topic", "registry.intake.v1", "Write")
        assert not access.allowed(mine, "topic", "registry.intake.v1", "Read")
        assert not access.allowed(mine, "topic", "registry.intake-rejected.v1", "Read")
        for other in AGENCIES:
            can = access.allowed(mine, "topic", agency_replies_topic(other), "Read")
            assert can == (other == agency)
    operator = rules[access.OPERATOR]
    assert not any("Write" in r.operations for r in operator)


def test_k8s_services_use_their_own_kafka_user_and_the_users_are_the_codes_own() -> None:
    docs = base_resources()
    for svc in SERVICES:
        (container,) = find(docs, "Deployment", f"perlinsos-{svc}")["spec"]["template"]["spec"][
            "containers"
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env["KAFKA_SASL_USERNAME"]["value"] == access.service_user(svc)
        ref = env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (access.service_user(svc), "password")

    users = load_yaml_all(K8S_PRODUCTION / "kafka-users.yaml")
    hint = "regenerate: uv run --frozen python -m perlinsos_shared.access --strimzi-users " + (
        " ".join(AGENCIES)
    )
    assert users == access.strimzi_users(AGENCIES), hint
    production = load_yaml(K8S_PRODUCTION / "kustomization.yaml")
    assert "kafka-users.yaml" in production["resources"]
    config = load_yaml(K8S_PRODUCTION / "config.yaml")["data"]
    assert "KAFKA_SASL_USERNAME" not in config, "no user shared by every service"

    topics = load_yaml_all(K8S_BASE / "agency-topics.yaml")
    assert topics == access.strimzi_agency_topics(AGENCIES)
    job = find(docs, "Job", "perlinsos-db-setup")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "perlinsos_shared.db_roles"]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["perlinsos-db-setup"]
    keys = find(docs, "ConfigMap", "perlinsos-agency-keys")
    assert json.loads(keys["data"]["agency-keys.json"]) == {}

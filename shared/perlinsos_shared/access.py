"""Who may do what on the broker: one principal per service and per agency, least privilege.

The rules come from the topic catalogue, never from a list written twice: a service
writes the topics it produces and the dead-letter twins of those it consumes, reads the
topics it consumes with its own consumer group (`perlinsos-<service>`); registry also
writes every agency's reply topic. An agency writes `registry.intake.v1` and reads only
`registry.intake-rejected.<AGENCY>.v2` (its own replies), with groups named
`agency-<AGENCY>...`. Finance reads the summaries and writes payments. Operators read
every topic (dead letters included) and write nothing.

`python -m perlinsos_shared.access --strimzi-users AGENCY...` prints these rules as
Strimzi `KafkaUser` resources (`deploy/k8s/overlays/production/kafka-users.yaml`),
`--strimzi-topics AGENCY...` the agencies' reply topics (`deploy/k8s/base/agency-topics.yaml`)
and `--kafka-acls AGENCY...` the `kafka-acls.sh` arguments the compose `kafka-access` job
applies (`deploy/kafka/acls.txt`). tests/test_deploy.py fails when a file differs.
Principals without a rule here get nothing: the brokers run with
`allow.everyone.if.no.acl.found=false`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from perlinsos_shared.kafka import _admin_security, bootstrap, security
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import (
    AGENCY_REPLIES,
    CATALOGUE,
    INTAKE,
    SUMMARIES,
    agency_replies_topic,
    all_topic_names,
)

SERVICES = ("registry", "eligibility", "premium", "notify")
FINANCE = "perlinsos-finance"
OPERATOR = "perlinsos-operator"
REPLIES_PREFIX = AGENCY_REPLIES.name.split("{", 1)[0]  # registry.intake-rejected.


@dataclass(frozen=True)
class Rule:
    """Operations on one resource (`topic` or `group`), by exact name or by prefix."""

    resource: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


READ = ("Read", "Describe")
WRITE = ("Write", "Describe")


def service_user(service: str) -> str:
    return f"perlinsos-{service}"


def agency_user(agency: str) -> str:
    return f"agency-{agency.lower()}"


def service_rules(service: str) -> list[Rule]:
    rules: list[Rule] = []
    for t in CATALOGUE:
        if t.producer == service:
            rules.append(Rule("topic", t.name, WRITE))
        if service in t.consumers:
            rules.append(Rule("topic", t.name, READ))
            rules.append(Rule("topic", t.dlq, WRITE))  # its dead letters, through its outbox
    if service == "registry":
        rules.append(Rule("topic", REPLIES_PREFIX, WRITE, prefixed=True))
    rules.append(Rule("group", service_user(service), ("Read",)))
    return rules


def agency_rules(agency: str) -> list[Rule]:
    return [
        Rule("topic", INTAKE.name, WRITE),
        Rule("topic", agency_replies_topic(agency), READ),
        Rule("group", f"{agency_user(agency)}", ("Read",), prefixed=True),
    ]


def finance_rules() -> list[Rule]:
    # PAYMENTS and the BPJS topics (memberships in, reconciliations out) name finance as
    # their producer: finance writes every such topic.
    return [
        Rule("topic", SUMMARIES.name, READ),
        *(Rule("topic", t.name, WRITE) for t in CATALOGUE if t.producer == "finance"),
        Rule("group", FINANCE, ("Read",), prefixed=True),
    ]


def operator_rules() -> list[Rule]:
    return [Rule("topic", name, READ) for name in all_topic_names()] + [
        Rule("group", OPERATOR, ("Read",), prefixed=True)
    ]


def principals(agencies: Iterable[str]) -> dict[str, list[Rule]]:
    """Every broker user and what it may do."""
    out = {service_user(s): service_rules(s) for s in SERVICES}
    out.update({agency_user(a): agency_rules(a) for a in agencies})
    out[FINANCE] = finance_rules()
    out[OPERATOR] = operator_rules()
    return out


def allowed(rules: Sequence[Rule], resource: str, name: str, operation: str) -> bool:
    """Whether these rules let their holder do `operation` on the resource (as the broker's
    simple authorizer decides: exact name, or a prefix rule whose prefix it starts with)."""
    return any(
        r.resource == resource
        and operation in r.operations
        and (name.startswith(r.name) if r.prefixed else name == r.name)
        for r in rules
    )


async def ensure_agency_topics(settings: Settings, agencies: Iterable[str]) -> list[str]:
    """Create each registered agency's reply topic if missing; return those created now."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap(settings)}
    if security(settings) is not None:
        kwargs.update(_admin_security(settings))
    admin = AIOKafkaAdminClient(**kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [agency_replies_topic(a) for a in agencies]
        created = []
        for name in wanted:
            if name in existing:
                continue
            try:
                await admin.create_topics([NewTopic(name, AGENCY_REPLIES.partitions, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


# --- as deployment files -----------------------------------------------------------------


def strimzi_users(agencies: Iterable[str], cluster: str = "perlinsos") -> list[dict[str, Any]]:
    """One Strimzi `KafkaUser` (SCRAM-SHA-512, simple authorization) per principal; the User
    Operator keeps each one's password in a Secret of the same name."""
    users = []
    for user, rules in principals(agencies).items():
        users.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaUser",
                "metadata": {
                    "name": user,
                    "labels": {
                        "strimzi.io/cluster": cluster,
                        "app.kubernetes.io/part-of": "perlinsos",
                    },
                },
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {
                        "type": "simple",
                        "acls": [
                            {
                                "resource": {
                                    "type": r.resource,
                                    "name": r.name,
                                    "patternType": "prefix" if r.prefixed else "literal",
                                },
                                "operations": list(r.operations),
                            }
                            for r in rules
                        ],
                    },
                },
            }
        )
    return users


def kafka_acl_commands(agencies: Iterable[str]) -> list[str]:
    """`kafka-acls.sh` arguments, one line per rule (the compose `kafka-acls` job)."""
    lines = []
    for user, rules in principals(agencies).items():
        for r in rules:
            ops = " ".join(f"--operation {op}" for op in r.operations)
            pattern = "prefixed" if r.prefixed else "literal"
            lines.append(
                f"--add --allow-principal User:{user} {ops} --{r.resource} {r.name}"
                f" --resource-pattern-type {pattern}"
            )
    return lines


def strimzi_agency_topics(
    agencies: Iterable[str], cluster: str = "perlinsos"
) -> list[dict[str, Any]]:
    """Each registered agency's reply topic as a Strimzi `KafkaTopic`."""
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {
                "name": agency_replies_topic(a).lower().replace("_", "-"),
                "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "perlinsos"},
            },
            "spec": {
                "topicName": agency_replies_topic(a),
                "partitions": AGENCY_REPLIES.partitions,
                "replicas": 1,
                "config": {
                    "cleanup.policy": "delete",
                    "retention.ms": str(AGENCY_REPLIES.retention_days * 86_400_000),
                },
            },
        }
        for a in agencies
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perlinsos_shared.access")
    parser.add_argument("agencies", nargs="+", help="registered agency codes")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--strimzi-users", action="store_true", help="KafkaUser resources")
    how.add_argument("--strimzi-topics", action="store_true", help="agency reply KafkaTopics")
    how.add_argument("--kafka-acls", action="store_true", help="kafka-acls.sh argument lines")
    args = parser.parse_args(argv)
    flag = next(
        f
        for f in ("strimzi-users", "strimzi-topics", "kafka-acls")
        if getattr(args, f.replace("-", "_"))
    )
    command = (
        f"uv run --frozen python -m perlinsos_shared.access --{flag} {' '.join(args.agencies)}"
    )
    if args.kafka_acls:
        sys.stdout.write(
            f"# Generated by\n#   {command}\n# Do not edit: tests/test_deploy.py fails when this differs from the code.\n"
        )
        sys.stdout.write("\n".join(kafka_acl_commands(args.agencies)) + "\n")
        return
    import yaml  # a development tool; the runtime image does not need PyYAML

    docs = (
        strimzi_users(args.agencies) if args.strimzi_users else strimzi_agency_topics(args.agencies)
    )
    sys.stdout.write(
        f"# Generated from perlinsos_shared.access by\n#   {command}\n"
        "# Do not edit: tests/test_deploy.py fails when this differs from the code.\n"
    )
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))


if __name__ == "__main__":
    main()

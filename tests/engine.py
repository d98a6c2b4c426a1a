"""Test helpers: desired states from Python dicts, an apply environment on real adapters, and the
plan/apply path of :mod:`certreconcile.engine` (the one the CLI, ``run`` and the facade use)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from certreconcile import engine
from certreconcile.actual.model import Observations
from certreconcile.actual.store import CertificateRow, StateStore
from certreconcile.apply.executor import ApplyEnvironment, ApplyResult, certificate_context
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import seal
from certreconcile.desired import load_desired
from certreconcile.desired.model import DesiredState, OnDelete
from certreconcile.domain.keys import KeyType
from certreconcile.domain.status import CertStatus
from certreconcile.plan import Plan
from certreconcile.plugins.ports import Kms, SecretBytes
from certreconcile.wiring import Settings, build_environment

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def desired_doc(
    certificates: list[dict[str, Any]],
    *,
    targets: Mapping[str, dict[str, Any]] | None = None,
    lifetime: str = "90d",
    allowed: list[str] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kms": {"local": {}},
        "issuers": {"internal": {"local_ca": {"common_name": "Test CA", "lifetime": lifetime}}},
        "targets": dict(targets) if targets is not None else {"deploy": {"files": {"dir": "out/deploy"}}},
        "certificates": certificates,
    }
    if allowed is not None:
        doc["policy"] = {"allowed_domains": allowed}
    return doc


def cert(name: str, *domains: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "domains": list(domains) or [f"{name}.example.com"], "issuer": "internal"}
    body.setdefault("targets", ["deploy"])
    body.update(extra)
    return body


def write_desired(directory: Path, doc: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    (directory / "certificates.yaml").write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return directory


def load(directory: Path, doc: Mapping[str, Any]) -> DesiredState:
    return load_desired(write_desired(directory, doc))


def settings_for(directory: Path) -> Settings:
    return Settings(
        desired_dir=directory.resolve(),
        data_dir=directory.resolve() / ".certreconcile",
        database_url=None,
        env={
            "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(directory.resolve() / ".certreconcile" / "kms.key"),
            "USER": "tester",
        },
    )


def environment(directory: Path, desired: DesiredState, store: StateStore, clock: FixedClock) -> ApplyEnvironment:
    return build_environment(desired, settings_for(directory), store, clock)


def plan_now(
    desired: DesiredState,
    store: StateStore,
    clock: FixedClock,
    *,
    observations: Observations | None = None,
    force_rotate: frozenset[str] = frozenset(),
) -> Plan:
    """The plan through the engine's one path (no CA or target asked; ``observations`` stand in for a refresh)."""
    now = clock.now()
    gathered = engine.gather(desired, store, now)
    if observations is not None:
        gathered = replace(gathered, observations=observations)
    return engine.plan(gathered, now, force_rotate=force_rotate)


def plan_and_apply(
    directory: Path, desired: DesiredState, store: StateStore, clock: FixedClock, *, concurrency: int = 4
) -> tuple[Plan, ApplyResult]:
    plan = plan_now(desired, store, clock)
    result = engine.apply(plan, desired, environment(directory, desired, store, clock), concurrency=concurrency)
    return plan, result


SEALED_KEY_PREFIX = b"-----BEGIN PRIVATE KEY-----"


def sealed_certificate_rows(store: StateStore, kms: Kms, count: int, now: datetime = T0) -> None:
    """Insert ``count`` active certificates whose stand-in keys (the prefix + the row id) ``kms`` sealed."""
    with store.session() as session, session.transaction():
        for number in range(count):
            cert_id = str(uuid.uuid4())
            session.insert_certificate(
                CertificateRow(
                    id=cert_id,
                    name=f"cert-{number}",
                    domains=(f"cert-{number}.example.com",),
                    issuer="internal",
                    key_type=KeyType.ECDSA_P256,
                    serial_number=f"serial-{cert_id}",
                    not_before=now,
                    not_after=now + timedelta(days=90),
                    status=CertStatus.ACTIVE,
                    fingerprint=f"fp-{cert_id}",
                    key_ref=seal(kms, SecretBytes(SEALED_KEY_PREFIX + cert_id.encode()), certificate_context(cert_id)),
                    cert_pem="pem",
                    chain_pem="",
                    on_delete=OnDelete.RETIRE,
                )
            )

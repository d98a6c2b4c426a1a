"""certreconcile_certificate_ready_status as cert-manager's: one series per condition, and issuer_kind."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from certreconcile.actual.model import ActualCertificate, ActualState, DistributionState, StateMeta
from certreconcile.apply.metrics import ReconcilerMetrics, ready_condition
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from engine import T0, cert, desired_doc, load

DAY = timedelta(days=1)
FINGERPRINT = "f" * 64


@pytest.fixture
def desired(tmp_path: Path) -> DesiredState:
    return load(tmp_path, desired_doc([cert("shop"), cert("api")]))


def current(name: str, status: CertStatus, *distributions: DistributionState) -> ActualCertificate:
    return ActualCertificate(
        id=f"id-{name}", name=name, domains=(f"{name}.example.com",), issuer="internal", key_type=KeyType.ECDSA_P256,
        serial_number="1", not_before=T0 - DAY, not_after=T0 + 80 * DAY, status=status, fingerprint=FINGERPRINT,
        on_delete=OnDelete.RETIRE, has_key=True, distributions={d.target: d for d in distributions},
    )  # fmt: skip


VERIFIED = DistributionState("deploy", FINGERPRINT, pushed_at=T0, verified_at=T0)
PUSHED = DistributionState("deploy", FINGERPRINT, pushed_at=T0, verified_at=None)
FAILED = DistributionState("deploy", FINGERPRINT, pushed_at=T0, verified_at=None, last_error="target-not-serving")
OTHER = replace(VERIFIED, fingerprint="0" * 64)  # the target serves another certificate


@pytest.mark.parametrize(
    ("status", "distributions", "condition"),
    [
        (CertStatus.ACTIVE, (VERIFIED,), "True"),
        (CertStatus.EXPIRING_SOON, (VERIFIED,), "True"),  # due for renewal, still served
        (CertStatus.ISSUED, (), "Unknown"),  # being deployed
        (CertStatus.ISSUED, (PUSHED,), "Unknown"),
        (CertStatus.ISSUED, (FAILED,), "False"),  # its deployment failed
        (CertStatus.ACTIVE, (OTHER,), "False"),
        (CertStatus.ACTIVE, (), "False"),
        (CertStatus.EXPIRED, (VERIFIED,), "False"),
        (CertStatus.REVOKED, (VERIFIED,), "False"),
    ],
)
def test_the_condition_of_a_name(
    status: CertStatus, distributions: tuple[DistributionState, ...], condition: str
) -> None:
    assert ready_condition(current("shop", status, *distributions), ("deploy",)) == condition


def test_one_series_per_condition_with_the_issuer_kind(desired: DesiredState) -> None:
    metrics = ReconcilerMetrics()
    actual = ActualState(
        meta=StateMeta("L", 1),
        certificates={
            "shop": current("shop", CertStatus.ACTIVE, VERIFIED),
            "api": current("api", CertStatus.ISSUED, PUSHED),
            "old": current("old", CertStatus.ACTIVE, OTHER),  # no longer declared: its issuer's kind from desired
        },
    )
    metrics.observe_state(desired, actual)
    text = generate_latest(metrics.registry).decode()
    ready = {
        (s.labels["name"], s.labels["condition"]): (s.labels["issuer"], s.labels["issuer_kind"], s.value)
        for family in text_string_to_metric_families(text)
        if family.name == "certreconcile_certificate_ready_status"
        for s in family.samples
    }
    assert {key: value for key, (*_, value) in ready.items()} == {
        ("shop", "True"): 1.0, ("shop", "False"): 0.0, ("shop", "Unknown"): 0.0,
        ("api", "True"): 0.0, ("api", "False"): 0.0, ("api", "Unknown"): 1.0,
        ("old", "True"): 0.0, ("old", "False"): 1.0, ("old", "Unknown"): 0.0,
    }  # fmt: skip
    assert {labels[:2] for labels in ready.values()} == {("internal", "local_ca")}
    assert (
        'certreconcile_certificate_expiration_timestamp_seconds{issuer="internal",issuer_kind="local_ca",name="shop"}'
        in text
    )

    metrics.observe_state(None, actual)  # the declarations could not be read: the kind is unknown
    assert 'issuer_kind="unknown"' in generate_latest(metrics.registry).decode()

"""The seed's Python interface, ``CertificateManager``, on real adapters, over both state stores."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certreconcile.actual.store import StateStore
from certreconcile.apply.executor import ApplyEnvironment, certificate_context
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import key_ref_from_json, open_envelope
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError, PolicyViolation
from certreconcile.manager import CertificateManager, CertificateRecord
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, cert, desired_doc, environment, load, write_desired

TARGETS = {"deploy": {"files": {"dir": "out/deploy"}}, "other": {"files": {"dir": "out/other"}}}
NAME = "a-example-com"  # the manager's name for primary a.example.com


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest, clock: FixedClock) -> StateStore:
    if request.param == "memory":
        return InMemoryStore(clock=clock)
    postgres: StateStore = request.getfixturevalue("postgres_store")
    return postgres


@pytest.fixture
def env(tmp_path: Path, store: StateStore, clock: FixedClock) -> ApplyEnvironment:
    desired = load(tmp_path, desired_doc([], targets=TARGETS))
    return environment(tmp_path, desired, store, clock)


@pytest.fixture
def manager(env: ApplyEnvironment, store: StateStore, clock: FixedClock) -> CertificateManager:
    return CertificateManager(store, env.kms, env.issuers, targets=env.targets, clock=clock)


@pytest.fixture
def issued(manager: CertificateManager) -> CertificateRecord:
    return manager.issue_certificate(["a.example.com", "b.example.com"], acme_provider="internal")


def audit_actions(store: StateStore, name: str = NAME) -> list[str]:
    with store.session() as session:
        return [event.action for event in session.audit_events(name=name)]


# ------------------------------------------------------------------ issue


def test_issue_certificate_returns_a_record(
    issued: CertificateRecord, store: StateStore, env: ApplyEnvironment, clock: FixedClock
) -> None:
    assert isinstance(issued, CertificateRecord)
    assert issued.id
    assert issued.domain == "a.example.com"
    assert issued.san_domains == ["b.example.com"]
    assert issued.status == "active"
    assert issued.not_after == T0 + timedelta(days=90)
    assert len(issued.fingerprint) == 64
    assert "PRIVATE KEY" not in issued.key_ref
    with store.session() as session:
        current = session.current_certificate(NAME)
        assert current is not None and current.id == issued.id
        cert_pem, _ = session.certificate_pems(issued.id)
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    assert hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest() == issued.fingerprint
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.example.com", "b.example.com"]
    # key_ref is the sealed key of this very certificate.
    key_pem = open_envelope(env.kms, key_ref_from_json(issued.key_ref), certificate_context(issued.id)).reveal()
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert audit_actions(store) == [AuditAction.ISSUED]
    with store.session() as session:
        assert {e.actor for e in session.audit_events(name=NAME)} == {"user:certificate-manager"}


def test_issue_normalises_and_deduplicates_domains(manager: CertificateManager) -> None:
    record = manager.issue_certificate(["Shop.Example.COM.", "shop.example.com", "www.shop.example.com"], "internal")
    assert record.domain == "shop.example.com"
    assert record.san_domains == ["www.shop.example.com"]


def test_issue_refuses_bad_requests(manager: CertificateManager, issued: CertificateRecord) -> None:
    with pytest.raises(CertReconcileError) as unknown:
        manager.issue_certificate(["c.example.com"], acme_provider="letsencrypt")
    assert unknown.value.code == "issuer-unknown"
    with pytest.raises(CertReconcileError) as empty:
        manager.issue_certificate([], acme_provider="internal")
    assert empty.value.code == "domains-empty"
    with pytest.raises(CertReconcileError) as twice:
        manager.issue_certificate(["a.example.com"], acme_provider="internal")
    assert twice.value.code == "already-issued"


# ------------------------------------------------------------------ distribute


def test_distribute_certificate_writes_files_and_audits(
    manager: CertificateManager, issued: CertificateRecord, store: StateStore, tmp_path: Path
) -> None:
    assert manager.distribute_certificate(issued.id, ["deploy"]) is None
    folder = tmp_path / "out" / "deploy" / NAME
    assert sorted(p.name for p in folder.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    assert stat.S_IMODE((folder / "privkey.pem").stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    assert hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest() == issued.fingerprint
    assert audit_actions(store) == [
        AuditAction.ISSUED,
        AuditAction.KEY_ACCESSED,
        AuditAction.DISTRIBUTED,
        AuditAction.VERIFIED,
    ]
    with store.session() as session:
        current = session.current_certificate(NAME)
        assert current is not None
        assert current.distributions["deploy"].verified_at is not None
    assert not (tmp_path / "out" / "other").exists()
    # A second target later, and a repeat after the files were lost: both written.
    manager.distribute_certificate(issued.id, ["other"])
    (folder / "privkey.pem").unlink()
    manager.distribute_certificate(issued.id, ["deploy"])
    assert (folder / "privkey.pem").exists()
    assert (tmp_path / "out" / "other" / NAME / "privkey.pem").exists()


def test_distribute_refuses_unknown_targets_and_ids(
    manager: CertificateManager, issued: CertificateRecord, store: StateStore
) -> None:
    with pytest.raises(CertReconcileError) as target:
        manager.distribute_certificate(issued.id, ["nowhere"])
    assert target.value.code == "target-unknown"
    with pytest.raises(CertReconcileError) as cert_id:
        manager.distribute_certificate("00000000-0000-0000-0000-000000000000", ["deploy"])
    assert cert_id.value.code == "cert-unknown"
    assert audit_actions(store) == [AuditAction.ISSUED]


# ------------------------------------------------------------------ rotate


def _assert_rotated(old: CertificateRecord, new: CertificateRecord, store: StateStore) -> None:
    assert new.id != old.id
    assert new.fingerprint != old.fingerprint
    assert new.key_ref != old.key_ref
    assert (new.domain, new.san_domains) == (old.domain, old.san_domains)
    assert new.status == "active"
    with store.session() as session:
        assert session.certificate_status(old.id) is CertStatus.SUPERSEDED
        current = session.current_certificate(NAME)
        assert current is not None and current.id == new.id
        assert session.rotation_replacing(new.id) is None  # completed


def test_rotate_certificate_replaces_it(
    manager: CertificateManager, issued: CertificateRecord, store: StateStore, tmp_path: Path
) -> None:
    manager.distribute_certificate(issued.id, ["deploy"])
    new = manager.rotate_certificate(issued.id)
    _assert_rotated(issued, new, store)
    leaf = x509.load_pem_x509_certificate((tmp_path / "out" / "deploy" / NAME / "cert.pem").read_bytes())
    assert hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest() == new.fingerprint


def test_rotate_certificate_in_the_renewal_window(
    manager: CertificateManager, issued: CertificateRecord, store: StateStore, clock: FixedClock, tmp_path: Path
) -> None:
    manager.distribute_certificate(issued.id, ["deploy"])
    clock.advance(timedelta(days=70))  # 90d lifetime: default renew_before is 30d
    new = manager.rotate_certificate(issued.id)
    _assert_rotated(issued, new, store)
    leaf = x509.load_pem_x509_certificate((tmp_path / "out" / "deploy" / NAME / "cert.pem").read_bytes())
    assert hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest() == new.fingerprint
    assert AuditAction.RENEWED in audit_actions(store)
    with pytest.raises(CertReconcileError) as stale:
        manager.rotate_certificate(issued.id)  # no longer current
    assert stale.value.code == "cert-unknown"


# ------------------------------------------------------------------ ACME HTTP-01 challenge
# The self-check against a real solver and server: tests/e2e/test_manager_facade.py.

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


@pytest.mark.parametrize("token", ["", "../../etc/passwd", "a/b", "a b", "tok.en", "x" * 257, "ö"])
def test_validate_acme_challenge_invalid_token_raises(manager: CertificateManager, token: str, tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CertReconcileError) as caught:
        manager.validate_acme_challenge("a.example.com", token)
    assert caught.value.code == "challenge-token-invalid"
    assert sorted(tmp_path.rglob("*")) == before


def test_validate_acme_challenge_needs_an_http01_issuer(manager: CertificateManager) -> None:
    with pytest.raises(CertReconcileError) as caught:
        manager.validate_acme_challenge("a.example.com", TOKEN)
    assert caught.value.code == "challenge-solver-missing"
    with pytest.raises(CertReconcileError) as named:
        manager.validate_acme_challenge("a.example.com", TOKEN, acme_provider="internal")
    assert named.value.code == "challenge-solver-missing"


# ------------------------------------------------------------------ policy (no store needed beyond the check)


def test_allowed_domains_refuse_before_anything(manager: CertificateManager, store: StateStore) -> None:
    manager.allowed_domains = ("example.com", "*.example.com")
    with pytest.raises(PolicyViolation) as caught:
        manager.issue_certificate(["a.example.org"], acme_provider="internal")
    assert caught.value.code == "domain-not-allowed"
    with store.session() as session:
        assert session.load_actual().certificates == {}
    record = manager.issue_certificate(["a.example.com"], acme_provider="internal")
    with store.session() as session:
        current = session.current_certificate(NAME)
        assert current is not None and current.id == record.id and current.origin is Origin.API


# ------------------------------------------------------------------ the package root


def test_the_package_root_exports_the_facade_lazily() -> None:
    code = (
        "import sys, certreconcile\n"
        "assert 'certreconcile.manager' not in sys.modules, 'imported eagerly'\n"
        "from certreconcile import CertificateManager, CertificateRecord\n"
        "import certreconcile.manager as m\n"
        "assert CertificateManager is m.CertificateManager and CertificateRecord is m.CertificateRecord\n"
        "assert all(hasattr(certreconcile, name) for name in certreconcile.__all__)\n"
        "assert set(certreconcile.__all__) <= set(dir(certreconcile))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )


def test_the_package_root_refuses_unknown_names() -> None:
    import certreconcile

    with pytest.raises(AttributeError):
        certreconcile.NoSuchThing  # noqa: B018


# ------------------------------------------------------------------ from_directory


def test_from_directory_wires_like_the_cli(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
) -> None:
    for key in ("CERTRECONCILE_DATA_DIR", "CERTRECONCILE_LOCAL_KMS_KEY_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CERTRECONCILE_DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "manager-tester")
    doc = desired_doc([cert("shop", "shop.example.com")], targets=TARGETS, allowed=["example.com", "*.example.com"])
    directory = write_desired(tmp_path / "certs", doc)
    manager = CertificateManager.from_directory(directory, clock=clock)
    record = manager.issue_certificate(["api.example.com"], acme_provider="internal")
    manager.distribute_certificate(record.id, ["deploy"])
    deployed = directory / "out" / "deploy" / "api-example-com" / "privkey.pem"  # relative to the directory
    assert stat.S_IMODE(deployed.stat().st_mode) == 0o600
    assert (directory / ".certreconcile" / "local-kms.key").exists()  # the default key location
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT name, status FROM Certificate").fetchall()
        actors = conn.execute("SELECT DISTINCT actor FROM CertAudit").fetchall()
    assert rows == [("api-example-com", "active")]
    assert actors == [("user:manager-tester",)]

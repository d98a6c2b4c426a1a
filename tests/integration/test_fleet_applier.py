"""The applier's side of the fleet against the session PostgreSQL, the local KMS and a real TLS peer.

Fleet CA and enrolment (the CA's key sealed, never in plaintext in its row), the applier's
ephemeral identity, the memfd TLS context in a real mutual-TLS handshake, the client's identity
checks, the agent target, unreachable agents, and the renewal of an agent's own certificate.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certreconcile.actual.store import StateStore
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.crypto.secret import SecretBytes
from certreconcile.desired.model import AgentTargetRef
from certreconcile.errors import CertReconcileError, TargetError
from certreconcile.fleet.applier import Fleet
from certreconcile.fleet.ca import FLEET_CA_NAME, FleetCa, public_key_der
from certreconcile.fleet.enrol import enrol_agent, fleet_ca_pem
from certreconcile.fleet.identity import IdentitySource, mint_applier
from certreconcile.fleet.protocol import APPLIER_URI, DEFAULT_AGENT_CERT_LIFETIME, agent_uri
from certreconcile.fleet.target import AgentTarget
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.ports import DeployBundle
from fleet_servers import AgentStandIn, agent_stand_in, csr_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FP = "ab" * 32


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms(tmp_path / "kms.key")


@pytest.fixture
def agent_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _enrol(store: StateStore, kms: LocalKms, key: ec.EllipticCurvePrivateKey, name: str = "web-1") -> str:
    return enrol_agent(store, kms, name, csr_for(key), T0, "user:tester").row.cert_pem


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in san]


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


# --- fleet CA and enrolment ---------------------------------------------------------------


def test_enrolment_makes_the_fleet_ca_and_signs_only_the_agent_identity(
    postgres_store: StateStore, kms: LocalKms, agent_key: ec.EllipticCurvePrivateKey, database_url: str
) -> None:
    csr = csr_for(agent_key, dns=("evil.example.com",), uris=(APPLIER_URI,))
    enrolment = enrol_agent(postgres_store, kms, "web-1", csr, T0, "user:tester")

    ca = x509.load_pem_x509_certificate(enrolment.ca_pem.encode())
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FLEET_CA_NAME
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.not_valid_after_utc - T0 >= timedelta(days=3649)
    leaf = x509.load_pem_x509_certificate(enrolment.row.cert_pem.encode())
    leaf.verify_directly_issued_by(ca)
    assert _uris(leaf) == [agent_uri("web-1")]  # the CSR's DNS name and applier URI are ignored
    assert _ekus(leaf) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.not_valid_after_utc - T0 == DEFAULT_AGENT_CERT_LIFETIME
    assert public_key_der(leaf.public_key()) == public_key_der(agent_key.public_key())

    with postgres_store.session() as session:
        agent = session.load_actual().agents["web-1"]
    assert (agent.serial, agent.fingerprint) == (enrolment.row.serial, enrolment.row.fingerprint)
    assert agent.enrolled_at == T0 and agent.last_seen_at is None
    with psycopg.connect(database_url) as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM CertAudit ORDER BY seq")]
        row_text = conn.execute("SELECT row_to_json(FleetCa)::text FROM FleetCa").fetchone()
    assert actions == [AuditAction.FLEET_CA_CREATED, AuditAction.AGENT_ENROLLED]
    assert fleet_ca_pem(postgres_store) == enrolment.ca_pem

    # The CA's key: sealed in its row, never there in plaintext (PEM, DER or base64 of the DER).
    opened = FleetCa.open(postgres_store, kms, T0, "user:tester", create=False)
    der = opened.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())  # fmt: skip
    assert row_text is not None
    text = row_text[0]
    assert "PRIVATE KEY" not in text
    assert base64.b64encode(der).decode() not in text
    assert base64.b64encode(der[-32:]).decode()[:24] not in text
    assert der.hex() not in text


def test_enrolment_refusals_change_nothing(
    postgres_store: StateStore, kms: LocalKms, agent_key: ec.EllipticCurvePrivateKey, database_url: str
) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key refused
    weak_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with pytest.raises(CertReconcileError, match="weak key") as refused:
        enrol_agent(postgres_store, kms, "web-1", weak_csr, T0, "user:tester")
    assert refused.value.code == "agent-csr-invalid"
    good = csr_for(agent_key)
    der = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte: the CSR no longer proves its key
    tampered = _pem(bytes(der))
    assert not x509.load_pem_x509_csr(tampered.encode()).is_signature_valid
    with pytest.raises(CertReconcileError) as bad:
        enrol_agent(postgres_store, kms, "web-1", tampered, T0, "user:tester")
    assert bad.value.code == "agent-csr-invalid"
    with pytest.raises(CertReconcileError) as bad_name:
        enrol_agent(postgres_store, kms, "Web_1", good, T0, "user:tester")
    assert bad_name.value.code == "usage"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM FleetCa").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM CertAudit").fetchone() == (0,)

    first = enrol_agent(postgres_store, kms, "web-1", good, T0, "user:tester")
    with pytest.raises(CertReconcileError) as again:
        enrol_agent(postgres_store, kms, "web-1", csr_for(ec.generate_private_key(ec.SECP256R1())), T0, "user:t")
    assert again.value.code == "agent-already-enrolled"
    with postgres_store.session() as session:
        assert session.load_actual().agents["web-1"].fingerprint == first.row.fingerprint
    replaced = enrol_agent(postgres_store, kms, "web-1", csr_for(ec.generate_private_key(ec.SECP256R1())),
                           T0 + timedelta(hours=1), "user:tester", replace=True)  # fmt: skip
    assert replaced.replaced and replaced.ca_pem == first.ca_pem  # the same fleet CA
    with postgres_store.session() as session:
        assert session.load_actual().agents["web-1"].fingerprint == replaced.row.fingerprint


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE REQUEST-----\n"


def test_fleet_ca_missing_until_the_first_enrolment(postgres_store: StateStore, kms: LocalKms) -> None:
    with pytest.raises(CertReconcileError) as missing:
        FleetCa.open(postgres_store, kms, T0, "user:tester", create=False)
    assert missing.value.code == "fleet-ca-missing"
    with pytest.raises(CertReconcileError) as no_pem:
        fleet_ca_pem(postgres_store)
    assert no_pem.value.code == "fleet-ca-missing"


# --- the applier's identity ----------------------------------------------------------------


def test_applier_identity_is_short_lived_client_only_and_reminted_when_half_gone(
    postgres_store: StateStore, kms: LocalKms
) -> None:
    ca = FleetCa.open(postgres_store, kms, T0, "user:tester", create=True)
    identity = mint_applier(ca, T0)
    cert = x509.load_pem_x509_certificate(identity.cert_pem.encode())
    cert.verify_directly_issued_by(ca.cert)
    assert _uris(cert) == [APPLIER_URI]
    assert _ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert timedelta(minutes=55) <= cert.not_valid_after_utc - T0 <= timedelta(hours=1)
    assert "PRIVATE" not in repr(identity)

    clock = FixedClock(T0)
    source = IdentitySource(lambda: ca, clock)
    first = source.context()
    assert source.context() is first
    clock.advance(timedelta(minutes=20))
    assert source.context() is first
    clock.advance(timedelta(minutes=15))  # past half of its life: a new key and certificate
    assert source.context() is not first
    assert source.identity().not_before == T0 + timedelta(minutes=35) - timedelta(minutes=1)


def test_the_memfd_context_leaves_no_descriptor_and_no_file(postgres_store: StateStore, kms: LocalKms) -> None:
    ca = FleetCa.open(postgres_store, kms, T0, "user:tester", create=True)
    before = set(os.listdir("/proc/self/fd"))
    mint_applier(ca, T0).context()
    after = set(os.listdir("/proc/self/fd"))
    assert after <= before


# --- a real mutual-TLS peer -------------------------------------------------------------------


@pytest.fixture
def fleet_ca(postgres_store: StateStore, kms: LocalKms) -> FleetCa:
    return FleetCa.open(postgres_store, kms, datetime.now(UTC), "user:tester", create=True)


@pytest.fixture
def stand_in(fleet_ca: FleetCa, agent_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Iterator[AgentStandIn]:
    cert = fleet_ca.sign_agent_csr("web-1", csr_for(agent_key), datetime.now(UTC))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    with agent_stand_in(pem, agent_key, fleet_ca.cert_pem, tmp_path) as server:
        yield server


def _fleet(ca: FleetCa) -> Fleet:
    return Fleet(lambda: ca, FixedClock(datetime.now(UTC)))


def _target(fleet: Fleet, url: str, agent: str = "web-1") -> AgentTarget:
    ref = AgentTargetRef(agent=agent, target="edge", url=url, timeout_seconds=5)
    return fleet.targets({f"{agent}/edge": _spec(ref)})[f"{agent}/edge"]


def _spec(ref: AgentTargetRef) -> Any:
    from certreconcile.desired.model import TargetSpec

    return TargetSpec(name=f"{ref.agent}/{ref.target}", kind="agent", config=ref, fingerprint="f")


def _observed(fingerprint: str | None) -> Any:
    return lambda body: (200, {"target": body["target"], "name": body["name"], "fingerprint": fingerprint})


def test_a_real_handshake_presents_the_applier_identity_and_observes(fleet_ca: FleetCa, stand_in: AgentStandIn) -> None:
    stand_in.handlers["observe"] = _observed(FP)
    fleet = _fleet(fleet_ca)
    seen = _target(fleet, stand_in.url).observe("shop", ("shop.example.com",))
    assert (seen.fingerprint, seen.unreachable, seen.error) == (FP, False, None)
    assert stand_in.peer_uris == [[APPLIER_URI]]
    path, body = stand_in.requests[0]
    assert path == "/v1/observe" and body["target"] == "edge" and len(body["nonce"]) >= 22
    assert fleet.contacts.snapshot()["web-1"].last_seen_at is not None


def test_deploy_sends_the_bundle_and_requires_the_agents_proof(fleet_ca: FleetCa, stand_in: AgentStandIn) -> None:
    verified = {"value": True}

    def deploy(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        served = body["fingerprint"] if verified["value"] else "cd" * 32
        return 200, {"target": body["target"], "name": body["name"], "fingerprint": served,
                     "verified": verified["value"], "changed": True}  # fmt: skip

    stand_in.handlers["deploy"] = deploy
    target = _target(_fleet(fleet_ca), stand_in.url)
    bundle = DeployBundle("shop", ("shop.example.com",), "CERT\n", "CHAIN\n", SecretBytes(b"KEY-PEM\n"), FP)
    target.deploy(bundle)
    body = stand_in.requests[-1][1]
    assert (body["key_pem"], body["cert_pem"], body["fingerprint"]) == ("KEY-PEM\n", "CERT\n", FP)
    verified["value"] = False
    with pytest.raises(TargetError) as refused:
        target.deploy(bundle)
    assert refused.value.code == "agent-not-verified" and "web-1" in refused.value.message
    assert "KEY-PEM" not in refused.value.one_line()


def test_agent_errors_come_back_with_the_agents_code(fleet_ca: FleetCa, stand_in: AgentStandIn) -> None:
    stand_in.handlers["deploy"] = lambda body: (403, {"error": {"code": "target-unknown", "message": "no target x"}})
    stand_in.handlers["observe"] = lambda body: (409, {"error": {"code": "nonce-replayed-x", "message": "replayed"}})
    fleet = _fleet(fleet_ca)
    client = fleet.client("web-1", stand_in.url, timedelta(seconds=5))
    with pytest.raises(TargetError) as known:
        client.call("deploy", target="x", name="shop", domains=("a.example",), cert_pem="c", key_pem="k",
                    fingerprint=FP)  # fmt: skip
    assert known.value.code == "target-unknown" and "agent web-1" in known.value.message
    with pytest.raises(TargetError) as unknown:
        client.call("observe", target="x", name="shop", domains=("a.example",))
    assert unknown.value.code == "agent-error" and "nonce-replayed-x" in unknown.value.message


def test_another_agents_certificate_is_refused(fleet_ca: FleetCa, stand_in: AgentStandIn) -> None:
    stand_in.handlers["observe"] = _observed(FP)
    fleet = _fleet(fleet_ca)
    client = fleet.client("web-2", stand_in.url, timedelta(seconds=5))  # web-1 answers there
    with pytest.raises(TargetError) as refused:
        client.call("observe", target="edge", name="shop", domains=("a.example",))
    assert refused.value.code == "agent-identity-mismatch"
    assert agent_uri("web-1") in refused.value.message and "web-2" in refused.value.message
    assert stand_in.requests == []  # refused before anything was sent
    assert fleet.contacts.snapshot()["web-2"].last_error is not None


def test_an_agent_certificate_from_another_ca_is_refused(
    fleet_ca: FleetCa, agent_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FLEET_CA_NAME)])
    now = datetime.now(UTC)
    other_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(other_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(other_key, hashes.SHA256())
    )  # fmt: skip
    other = FleetCa(other_cert, other_key, other_cert.public_bytes(serialization.Encoding.PEM).decode())
    forged = other.sign_agent_csr("web-1", csr_for(agent_key), now)
    pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    with agent_stand_in(pem, agent_key, fleet_ca.cert_pem, tmp_path) as server:
        server.handlers["observe"] = _observed(FP)
        seen = _target(_fleet(fleet_ca), server.url).observe("shop", ("shop.example.com",))
    assert seen.unreachable and seen.fingerprint is None
    assert seen.error is not None and "TLS handshake failed" in seen.error and "web-1" in seen.error
    assert server.requests == []


def test_an_unreachable_agent_is_observed_unreachable_with_a_clear_error(fleet_ca: FleetCa) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    fleet = _fleet(fleet_ca)
    seen = _target(fleet, url).observe("shop", ("shop.example.com",))
    assert seen.unreachable and seen.fingerprint is None
    assert seen.error == f"agent web-1 at {url} did not answer: connection refused"
    contact = fleet.contacts.snapshot()["web-1"]
    assert contact.last_seen_at is None and contact.last_error is not None and "\n" not in contact.last_error
    with pytest.raises(TargetError) as failed:
        _target(fleet, url).deploy(DeployBundle("shop", ("a.example",), "C", "", SecretBytes(b"SECRET"), FP))
    assert failed.value.code == "agent-unreachable" and "SECRET" not in failed.value.one_line()


def test_without_a_fleet_ca_agent_targets_answer_unreachable_with_the_reason(
    postgres_store: StateStore, kms: LocalKms
) -> None:
    fleet = Fleet(lambda: FleetCa.open(postgres_store, kms, T0, "user:tester", create=False), FixedClock(T0))
    seen = _target(fleet, "https://127.0.0.1:9").observe("shop", ("shop.example.com",))
    assert seen.unreachable
    assert seen.error is not None and "fleet-ca-missing" in seen.error


def test_a_fleet_ca_that_cannot_be_opened_is_asked_again_only_after_a_pause() -> None:
    from certreconcile.fleet.ca import fleet_ca_missing

    calls: list[datetime] = []
    clock = FixedClock(T0)

    def open_ca() -> FleetCa:
        calls.append(clock.now())
        raise fleet_ca_missing()

    source = IdentitySource(open_ca, clock)
    for _ in range(3):
        with pytest.raises(CertReconcileError) as failed:
            source.context()
        assert failed.value.code == "fleet-ca-missing"
    assert calls == [T0]
    clock.advance(timedelta(seconds=31))
    with pytest.raises(CertReconcileError):
        source.context()
    assert calls == [T0, T0 + timedelta(seconds=31)]

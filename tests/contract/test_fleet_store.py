"""The fleet part of the state-repository contract: InMemoryStore and PostgresStore behave alike."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from certreconcile.actual.store import AgentCertificateRow, FleetCaRecord, KeyRefTable, StateSession
from certreconcile.domain.keys import KeyRef

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def key_ref(key_id: str = "master-1") -> KeyRef:
    envelope = json.dumps({"kms": "local", "key_id": key_id, "wrapped_dek": "AAAA", "nonce": "BBBB", "ct": "CC"})
    return KeyRef(envelope_json=envelope, kms="local", key_id=key_id)


def agent_row(name: str = "web-1", fingerprint: str = "a" * 64, serial: str = "0a1b") -> AgentCertificateRow:
    return AgentCertificateRow(
        name=name, serial=serial, fingerprint=fingerprint, cert_pem=f"pem-{fingerprint[:4]}\n",
        not_before=T0, not_after=T0 + timedelta(days=30),
    )  # fmt: skip


def test_fleet_ca_first_writer_wins(session: StateSession) -> None:
    assert session.fleet_ca() is None
    first = session.put_fleet_ca(FleetCaRecord(cert_pem="ca-1\n", key_ref=key_ref("k1")))
    second = session.put_fleet_ca(FleetCaRecord(cert_pem="ca-2\n", key_ref=key_ref("k2")))
    assert first.cert_pem == second.cert_pem == "ca-1\n"
    assert second.key_ref == key_ref("k1")
    assert session.fleet_ca() == first


def test_fleet_ca_key_is_listed_counted_and_replaced_for_rewrap(session: StateSession) -> None:
    session.put_fleet_ca(FleetCaRecord(cert_pem="ca\n", key_ref=key_ref("k1")))
    listed = session.list_key_refs(KeyRefTable.FLEET_CA, None, 10)
    assert [(ref.row_id, ref.key_ref.key_id) for ref in listed] == [("fleet-ca", "k1")]
    assert session.list_key_refs(KeyRefTable.FLEET_CA, "fleet-ca", 10) == []
    assert ("local", "k1", 1) in {(use.kms, use.key_id, use.count) for use in session.key_ref_usage()}
    assert not session.replace_key_ref(KeyRefTable.FLEET_CA, "fleet-ca", key_ref("other"), key_ref("k2"))
    assert session.replace_key_ref(KeyRefTable.FLEET_CA, "fleet-ca", key_ref("k1"), key_ref("k2"))
    stored = session.fleet_ca()
    assert stored is not None and stored.key_ref.key_id == "k2"


def test_enrol_refuses_an_enrolled_name_unless_replaced(session: StateSession) -> None:
    assert session.agent_certificate("web-1") is None
    assert session.enroll_agent(agent_row(), T0, replace=False)
    assert not session.enroll_agent(agent_row(fingerprint="b" * 64), T0 + timedelta(hours=1), replace=False)
    assert session.agent_certificate("web-1") == agent_row()
    session.record_agent_contact("web-1", T0 + timedelta(minutes=5), None)
    assert session.enroll_agent(agent_row(fingerprint="b" * 64), T0 + timedelta(hours=1), replace=True)
    record = session.load_actual().agents["web-1"]
    assert record.fingerprint == "b" * 64
    assert record.enrolled_at == T0 + timedelta(hours=1)
    assert record.last_seen_at is None and record.renewed_at is None


def test_renew_is_compare_and_set_on_the_fingerprint(session: StateSession) -> None:
    session.enroll_agent(agent_row(), T0, replace=False)
    renewed = replace(agent_row(fingerprint="c" * 64, serial="ff"), not_after=T0 + timedelta(days=60))
    assert not session.renew_agent(renewed, "b" * 64, T0 + timedelta(days=20))
    assert session.renew_agent(renewed, "a" * 64, T0 + timedelta(days=20))
    assert session.agent_certificate("web-1") == renewed
    record = session.load_actual().agents["web-1"]
    assert (record.serial, record.not_after) == ("ff", T0 + timedelta(days=60))
    assert record.renewed_at == T0 + timedelta(days=20)
    assert record.enrolled_at == T0
    assert not session.renew_agent(agent_row("nobody"), "a" * 64, T0)


def test_contacts_keep_the_last_seen_time_and_the_last_error(session: StateSession) -> None:
    session.enroll_agent(agent_row("web-2"), T0, replace=False)
    session.enroll_agent(agent_row("web-1"), T0, replace=False)
    session.record_agent_contact("web-1", T0 + timedelta(minutes=10), None)
    session.record_agent_contact("web-1", T0 + timedelta(minutes=5), None)  # an older answer never moves it back
    session.record_agent_contact("web-1", T0 + timedelta(minutes=20), "agent-unreachable: connection refused")
    session.record_agent_contact("ghost", T0, None)  # not enrolled: nothing
    agents = session.load_actual().agents
    assert list(agents) == ["web-1", "web-2"]
    assert agents["web-1"].last_seen_at == T0 + timedelta(minutes=10)
    assert agents["web-1"].last_error == "agent-unreachable: connection refused"
    assert agents["web-2"].last_seen_at is None
    session.record_agent_contact("web-1", T0 + timedelta(minutes=30), None)
    agents = session.load_actual().agents
    assert (agents["web-1"].last_seen_at, agents["web-1"].last_error) == (T0 + timedelta(minutes=30), None)
    assert "ghost" not in agents

"""The fleet CA and the enrolled agents (``FleetStore``), in memory."""

from __future__ import annotations

from datetime import datetime

from certreconcile.actual.repository import decode_key_ref, encode_key_ref
from certreconcile.actual.store import AgentCertificateRow, FleetCaRecord
from certreconcile.testing.fake_state.base import FakeSessionBase, _Agent


class FakeFleet(FakeSessionBase):
    """The fleet CA and the enrolled agents (``FleetStore``), in memory."""

    def fleet_ca(self) -> FleetCaRecord | None:
        with self._store._mutex:
            return self._data.fleet_ca

    def put_fleet_ca(self, record: FleetCaRecord) -> FleetCaRecord:
        stored_ref = decode_key_ref(encode_key_ref(record.key_ref))  # the same checks as the database's
        with self._store._mutex:
            if self._data.fleet_ca is None:
                self._data.fleet_ca = FleetCaRecord(cert_pem=record.cert_pem, key_ref=stored_ref)
            return self._data.fleet_ca

    def agent_certificate(self, name: str) -> AgentCertificateRow | None:
        with self._store._mutex:
            agent = self._data.agents.get(name)
            return None if agent is None else agent.row

    def enroll_agent(self, row: AgentCertificateRow, at: datetime, *, replace: bool) -> bool:
        with self._store._mutex:
            if row.name in self._data.agents and not replace:
                return False
            self._data.agents[row.name] = _Agent(row=row, enrolled_at=at)
            return True

    def renew_agent(self, row: AgentCertificateRow, expected_fingerprint: str, at: datetime) -> bool:
        with self._store._mutex:
            agent = self._data.agents.get(row.name)
            if agent is None or agent.row.fingerprint != expected_fingerprint:
                return False
            agent.row, agent.renewed_at = row, at
            return True

    def record_agent_contact(self, name: str, at: datetime, error: str | None) -> None:
        with self._store._mutex:
            agent = self._data.agents.get(name)
            if agent is None:
                return
            if error is None:
                agent.last_seen_at = at if agent.last_seen_at is None else max(agent.last_seen_at, at)
                agent.last_error = None
            else:
                agent.last_error = error

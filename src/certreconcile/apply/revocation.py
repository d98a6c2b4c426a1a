"""Revocation and retirement of a name's certificate."""

from __future__ import annotations

from certreconcile.actual.model import ActualCertificate
from certreconcile.apply.distribution import DistributionSteps
from certreconcile.apply.results import ChangeResult
from certreconcile.audit.events import AuditAction
from certreconcile.desired.model import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.errors import IssuerError
from certreconcile.plan.plan import Change

__all__ = ["RevocationSteps"]


class RevocationSteps(DistributionSteps):
    """Revoke a certificate at its CA; retire a name no longer declared."""

    def _revoke(self, change: Change, current: ActualCertificate, *, reason: str) -> ChangeResult:
        issuer = self.env.issuers.get(current.issuer)
        if issuer is None:
            raise IssuerError(
                f"cannot revoke {change.name}: its issuer {current.issuer!r} is no longer declared",
                code="issuer-undeclared",
                hint="keep the issuer declared until its certificates are revoked",
            )
        cert_pem, _ = self.session.certificate_pems(current.id)
        issuer.revoke(cert_pem, reason)
        with self.session.transaction():
            self.session.set_status(current.id, CertStatus.REVOKED)
            self._audit(change, current.id, AuditAction.REVOKED, reason=reason, serial=current.serial_number)
            if change.name not in self.desired.certificates:
                self._forget_targets(change.name, current)
                self.session.retire(current.id, self.env.clock.now())
                self._audit(change, current.id, AuditAction.RETIRED)
        return ChangeResult(change, "done", f"revoked serial {current.serial_number}", cert_id=current.id)

    def _forget_targets(self, name: str, current: ActualCertificate) -> None:
        """A name no longer managed keeps no distribution rows (the deployed files stay where they are)."""
        for target in sorted(current.distributions):
            self.session.remove_distribution(name, target)

    def _retire(self, change: Change, current: ActualCertificate) -> ChangeResult:
        with self.session.transaction():
            self._forget_targets(change.name, current)
            self.session.retire(current.id, self.env.clock.now())
            self._audit(change, current.id, AuditAction.RETIRED, on_delete=OnDelete.RETIRE.value)
        return ChangeResult(change, "done", "no longer managed (history kept)", cert_id=current.id)

"""The ACME issuer: account per directory, resumable orders, HTTP-01/DNS-01, ARI, revocation.

Flow of :meth:`AcmeIssuer.issue` (RFC 8555 §7.4), each step safe to repeat:

1. resume the order journalled by an interrupted attempt of the same change, if it is
   still usable; else place a new one (with ARI ``replaces`` when renewing) and journal
   its URL before answering any challenge;
2. for each pending authorization: present the challenge (HTTP-01 token or DNS-01 TXT),
   wait until every authoritative name server answers the TXT values, answer, then poll
   the order (one request for all names) until it leaves ``pending``; the tokens and
   records are removed afterwards, also on failure;
3. finalize with the CSR (all names as one unit), poll, download the chain.

A rerun after a crash at any point continues the same order, so one change yields one
order and one certificate.

The steps live beside this module: ``account`` (directory, account, connections), ``order``
(place or resume, finalize, download) and ``authorization`` (challenges).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from acme import messages
from cryptography import x509

from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import RevocationReason
from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme.account import WIRE_ERRORS
from certreconcile.plugins.issuers.acme.authorization import AuthorizationSteps
from certreconcile.plugins.issuers.acme.client import (
    AcmeConnection,
    ari_certificate_id,
    parse_retry_after,
    problem_error,
    transport_error,
)
from certreconcile.plugins.issuers.acme.order import OrderSteps, split_chain
from certreconcile.plugins.ports import (
    IssuedCertificate,
    IssueRequest,
    RenewalInfo,
)

__all__ = ["AcmeIssuer"]

#: When the CA sends no Retry-After with renewal info (RFC 9773 §4.3.3 suggests 6 hours).
ARI_DEFAULT_RETRY = timedelta(hours=6)


class AcmeIssuer(OrderSteps, AuthorizationSteps):
    #: Renewal-info questions in flight at once (``apply.ari``, once an answer is slower than its ``INLINE_BELOW``):
    #: each is an unauthenticated GET that waits a round trip to the CA, so a fleet's refresh is not one round trip
    #: per certificate in turn (10,000 certificates at 50 ms: over 8 minutes).
    renewal_info_in_flight = 8

    # --- Issuer ------------------------------------------------------------------
    def supported_key_types(self) -> frozenset[KeyType]:
        return frozenset(KeyType)

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        connection = self._connection()
        deadline = time.monotonic() + self._order_timeout.total_seconds()
        order_url, order, replaces = self._resume_or_order(connection, request)
        validated: messages.Order | None = None
        if order.status not in (messages.STATUS_VALID, messages.STATUS_READY, messages.STATUS_PROCESSING):
            validated = self._authorize(connection, request, order_url, order, deadline)
        order = self._finalize(connection, request, order_url, deadline, validated)
        if request.journal is not None:
            request.journal.record_order(order_url, "valid", self.directory_url)
        fullchain = self._download(connection, order)
        cert_pem, chain_pem = split_chain(fullchain)
        return IssuedCertificate(cert_pem=cert_pem, chain_pem=chain_pem, ari_replaces=replaces)

    def check(self) -> str:
        """``certreconcile check``: read the directory (TLS, ca_bundle, the URL); no account is made."""
        self._get_directory()
        extra = " (with renewal info)" if self._offers("renewalInfo") else ""
        return f"the directory {self.directory_url} answered{extra}"

    def revoke(self, cert_pem: str, reason: str) -> None:
        try:
            code = RevocationReason.parse(reason)
        except ValueError as exc:
            raise IssuerError(str(exc), code="revocation-reason-unknown") from exc
        connection = self._connection()
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
        try:
            connection.post(  # repeatable: a second revocation answers alreadyRevoked
                self._directory_entry("revokeCert"),
                messages.Revocation(certificate=certificate, reason=int(code)),
                idempotent=True,
            )
        except messages.Error as exc:
            if exc.code == "alreadyRevoked":
                return
            raise problem_error("revoking the certificate", exc, code="acme-revoke") from exc
        except WIRE_ERRORS as exc:
            raise transport_error("revoking the certificate", exc) from exc

    # --- ARI (RFC 9773) ------------------------------------------------------------
    def renewal_info(self, cert_pem: str, now: datetime) -> RenewalInfo | None:
        directory = self._get_directory()
        try:
            base = directory["renewalInfo"]
        except KeyError:
            return None
        url = f"{str(base).rstrip('/')}/{ari_certificate_id(cert_pem)}"
        try:
            # an unauthenticated GET: no account needed
            response = AcmeConnection.anonymous_get(self._anonymous(), url, self.retry, self._now)
            info = messages.RenewalInfo.from_json(response.json())
        except messages.Error as exc:
            raise problem_error("fetching renewal info", exc, code="acme-ari") from exc
        except WIRE_ERRORS as exc:
            raise transport_error("fetching renewal info", exc) from exc
        window = info.suggested_window
        start, end = window.start, window.end
        if start is None or end is None or end < start:
            raise IssuerError("the CA's renewal info has no valid suggested window", code="acme-ari")
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now) or now + ARI_DEFAULT_RETRY
        explanation = response.json().get("explanationURL")
        return RenewalInfo(
            window_start=start.astimezone(UTC),
            window_end=end.astimezone(UTC),
            retry_after=retry_after,
            explanation_url=str(explanation) if explanation else None,
        )

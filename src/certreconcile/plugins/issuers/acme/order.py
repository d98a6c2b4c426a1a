"""The ACME order: resumed or placed (with ARI ``replaces``), finalized, downloaded."""

from __future__ import annotations

import re
import time

import requests
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.x509.oid import NameOID

from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme.account import WIRE_ERRORS, AcmeAccountBase
from certreconcile.plugins.issuers.acme.client import (
    ALREADY_REPLACED,
    AcmeConnection,
    NewOrderWithReplaces,
    ari_certificate_id,
    judge_failure,
    parse_retry_after,
    problem_error,
    transport_error,
)
from certreconcile.plugins.ports import (
    IssueRequest,
)

__all__ = ["OrderSteps", "split_chain"]

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL)


def split_chain(fullchain: str) -> tuple[str, str]:
    blocks = [match.group(0).strip() + "\n" for match in _PEM_BLOCK.finditer(fullchain)]
    if not blocks:
        raise IssuerError("the CA sent no certificate in the chain it returned", code="acme-empty-chain")
    return blocks[0], "".join(blocks[1:])


def top_issuer_name(fullchain: str) -> str:
    """Common name of the issuer of the last certificate of a chain (the root it chains to)."""
    last = _PEM_BLOCK.findall(fullchain)[-1]
    cert = x509.load_pem_x509_certificate(last.encode())
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class OrderSteps(AcmeAccountBase):
    """Place or resume the order, finalize it with the CSR, download the chain."""

    def _resume_or_order(
        self, connection: AcmeConnection, request: IssueRequest
    ) -> tuple[str, messages.Order, str | None]:
        saved = request.journal.saved_order_url() if request.journal is not None else None
        if saved:
            resumed = self._resumable(connection, request, saved)
            if resumed is not None:
                return saved, resumed, None
        replaces: str | None = None
        if request.replaces_cert_pem is not None and self._offers("renewalInfo"):
            replaces = ari_certificate_id(request.replaces_cert_pem)
        response, replaces = self._place_order(connection, request, replaces)
        order_url = response.headers.get("Location")
        if not order_url:
            raise IssuerError("the CA created an order but sent no order URL", code="acme-order")
        order = messages.Order.from_json(response.json())
        if request.journal is not None:
            request.journal.record_order(order_url, str(order.status), self.directory_url)
        return order_url, order, replaces

    def _resumable(self, connection: AcmeConnection, request: IssueRequest, saved: str) -> messages.Order | None:
        """The order an interrupted attempt placed, if it is still usable for these names (None: place a new one)."""
        wanted = {name.lower() for name in request.domains}
        try:
            order, _ = self._fetch_order(connection, saved)
        except WIRE_ERRORS as exc:
            if judge_failure(connection.net, exc, idempotent=True, now=self._now).retry:
                # The CA did not answer (after the bounded retries): never a second order for this change.
                raise transport_error("reading the order placed by an earlier attempt", exc) from exc
            return None  # gone or unreadable: place a new one
        if order.status == messages.STATUS_INVALID:
            return None
        names = {identifier.value.lower() for identifier in order.identifiers or ()}
        return order if names == wanted else None

    def _place_order(
        self, connection: AcmeConnection, request: IssueRequest, replaces: str | None
    ) -> tuple[requests.Response, str | None]:
        """POST newOrder; with ARI ``replaces`` unless another order already renews it."""
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in request.domains]
        while True:
            payload = NewOrderWithReplaces(identifiers=identifiers, profile=self._config.profile, replaces=replaces)
            try:
                return connection.post(self._directory_entry("newOrder"), payload), replaces
            except messages.Error as exc:
                if replaces is not None and exc.typ == ALREADY_REPLACED:
                    replaces = None  # another order already renews it: order as a plain new certificate
                    continue
                raise problem_error(f"ordering a certificate for {', '.join(request.domains)}", exc,
                                    code="acme-order") from exc  # fmt: skip
            except acme_errors.ConflictError:
                # RFC 9773 §5: alreadyReplaced comes as 409 Conflict, which certbot's network
                # layer raises before reading the problem document.
                if replaces is not None:
                    replaces = None
                    continue
                raise IssuerError("the CA refused the order (409 Conflict)", code="acme-order") from None
            except WIRE_ERRORS as exc:
                raise transport_error("ordering a certificate", exc) from exc

    def _finalize(
        self,
        connection: AcmeConnection,
        request: IssueRequest,
        order_url: str,
        deadline: float,
        known: messages.Order | None = None,
    ) -> messages.Order:
        """Finalize a ready order and poll until it is valid; ``known``: the order just read, if any."""
        csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        attempt = 0
        response: requests.Response | None = None
        while True:
            try:
                if known is not None:
                    order, known = known, None
                else:
                    order, response = self._fetch_order(connection, order_url)
                if order.status == messages.STATUS_READY:
                    try:
                        response = connection.post(order.finalize, messages.CertificateRequest(csr=csr))
                        order = messages.Order.from_json(response.json())
                    except messages.Error as exc:
                        if exc.code != "orderNotReady":
                            raise problem_error("finalizing the order", exc, code="acme-finalize") from exc
            except IssuerError:
                raise
            except WIRE_ERRORS as exc:
                raise transport_error("finalizing the order", exc) from exc
            if order.status == messages.STATUS_VALID and order.certificate:
                return order
            if order.status == messages.STATUS_INVALID:
                if order.error is not None:
                    raise problem_error("the order", order.error, code="acme-order-invalid")
                raise IssuerError("the CA marked the order invalid", code="acme-order-invalid")
            if time.monotonic() >= deadline:
                raise IssuerError(
                    "the CA did not finish the order within the order timeout",
                    code="acme-timeout",
                    hint="the order is resumed on the next apply",
                )
            retry_after = response.headers.get("Retry-After") if response is not None else None
            self._poller.wait(attempt, parse_retry_after(retry_after, self._now()), self._now(), deadline)
            attempt += 1

    def _download(self, connection: AcmeConnection, order: messages.Order) -> str:
        assert order.certificate is not None
        try:
            response = connection.post_as_get(order.certificate)
            fullchain = response.text
            preferred = self._config.preferred_chain
            if preferred and top_issuer_name(fullchain) != preferred:
                links = requests.utils.parse_header_links(response.headers.get("Link", ""))
                for link in links:
                    if link.get("rel") == "alternate" and link.get("url"):
                        alternate = connection.post_as_get(link["url"]).text
                        if top_issuer_name(alternate) == preferred:
                            return alternate
        except messages.Error as exc:
            raise problem_error("downloading the certificate", exc, code="acme-download") from exc
        except WIRE_ERRORS as exc:
            raise transport_error("downloading the certificate", exc) from exc
        return fullchain

"""Challenges: present (HTTP-01 token or DNS-01 TXT), answer, wait until validated, clean up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from acme import challenges, messages

from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme.account import WIRE_ERRORS, AcmeAccountBase
from certreconcile.plugins.issuers.acme.client import (
    AcmeConnection,
    parse_retry_after,
    problem_error,
    transport_error,
)
from certreconcile.plugins.ports import (
    Dns01Provider,
    DnsTxtRecord,
    IssueRequest,
)

__all__ = ["AuthorizationSteps"]


@dataclass(slots=True)
class _Presented:
    """What was put in place for one authorization, so it can be removed again."""

    authz_url: str
    identifier: str
    challenge: messages.ChallengeBody
    response: challenges.ChallengeResponse  # what answers the challenge (the key authorization)
    token: str | None = None  # http-01
    record: DnsTxtRecord | None = None  # dns-01


class AuthorizationSteps(AcmeAccountBase):
    """Present and answer the challenges of an order's pending authorizations, then wait for validation."""

    def _authorize(
        self,
        connection: AcmeConnection,
        request: IssueRequest,
        order_url: str,
        order: messages.Order,
        deadline: float,
    ) -> messages.Order | None:
        """Present and answer every pending challenge; the order once validated (None: nothing was pending)."""
        presented: list[_Presented] = []
        try:
            for authz_url in order.authorizations or ():
                try:
                    authz = messages.Authorization.from_json(connection.post_as_get(authz_url).json())
                except WIRE_ERRORS as exc:
                    raise transport_error("reading an authorization", exc) from exc
                if authz.status == messages.STATUS_VALID:
                    continue
                identifier = str(authz.identifier.value)
                if authz.status != messages.STATUS_PENDING:
                    raise IssuerError(
                        f"the authorization for {identifier} is {authz.status}", code="acme-authorization-invalid"
                    )
                presented.append(self._present(connection, request, authz_url, identifier, authz))
            records = tuple(item.record for item in presented if item.record is not None)
            if records:
                provider = self._dns_provider(request)
                remaining = timedelta(seconds=max(1.0, deadline - time.monotonic()))
                provider.wait_until_visible(records, remaining)
            for item in presented:
                if item.challenge.status != messages.STATUS_PENDING:
                    continue  # answered by an interrupted attempt: the CA is validating it, just wait
                try:
                    # repeatable (RFC 8555 §7.5.1): a challenge already being validated answers as it is
                    connection.post(item.challenge.uri, item.response, idempotent=True)
                except messages.Error as exc:
                    raise problem_error(f"answering the challenge for {item.identifier}", exc,
                                        code="acme-challenge") from exc  # fmt: skip
                except WIRE_ERRORS as exc:
                    raise transport_error("answering a challenge", exc) from exc
            return self._wait_until_validated(connection, order_url, presented, deadline) if presented else None
        finally:
            self._clean(request, presented)

    def _present(
        self,
        connection: AcmeConnection,
        request: IssueRequest,
        authz_url: str,
        identifier: str,
        authz: messages.Authorization,
    ) -> _Presented:
        wanted = "dns-01" if authz.wildcard or request.challenge == "dns-01" else "http-01"
        for challenge in authz.challenges:
            if challenge.chall.typ == wanted:
                break
        else:
            offered = ", ".join(sorted(str(c.chall.typ) for c in authz.challenges))
            raise IssuerError(
                f"the CA offers no {wanted} challenge for {identifier} (offers: {offered})",
                code="acme-challenge-unavailable",
            )
        response, validation = challenge.chall.response_and_validation(connection.challenge_key)
        if isinstance(challenge.chall, challenges.HTTP01):
            token = challenge.chall.encode("token")
            self._http01.present(token, str(validation))
            return _Presented(authz_url, identifier, challenge, response, token=token)
        assert isinstance(challenge.chall, challenges.DNS01)
        record = DnsTxtRecord(fqdn=challenge.chall.validation_domain_name(identifier).lower(), value=str(validation))
        self._dns_provider(request).present(record)
        return _Presented(authz_url, identifier, challenge, response, record=record)

    def _dns_provider(self, request: IssueRequest) -> Dns01Provider:
        provider = self._dns_providers.get(request.dns_provider or "")
        if provider is None:
            raise IssuerError(
                f"{request.name} needs dns-01 but names no declared dns_provider",
                code="acme-dns-provider-missing",
                hint="set challenge: dns-01 and dns_provider on the certificate (wildcards need dns-01)",
            )
        return provider

    def _clean(self, request: IssueRequest, presented: list[_Presented]) -> None:
        """Remove every token and record, also after a failure; the first cleanup error is raised last."""
        failure: Exception | None = None
        for item in presented:
            try:
                if item.token is not None:
                    self._http01.cleanup(item.token)
                if item.record is not None:
                    self._dns_provider(request).cleanup(item.record)
            except Exception as exc:  # noqa: BLE001 - keep cleaning the others, report one
                failure = failure or exc
        if failure is not None and not isinstance(failure, IssuerError):
            raise IssuerError(f"removing a challenge response failed ({type(failure).__name__})",
                              code="acme-cleanup") from failure  # fmt: skip
        if failure is not None:
            raise failure

    def _wait_until_validated(
        self, connection: AcmeConnection, order_url: str, presented: list[_Presented], deadline: float
    ) -> messages.Order:
        """Poll the order (one request for all names) until the CA has validated every authorization.

        The order stays ``pending`` while any authorization is, turns ``ready`` once all are valid
        and ``invalid`` when one fails (RFC 8555 §7.1.6); only then are the authorizations read,
        for the CA's reason.
        """
        attempt = 0
        while True:
            try:
                order, response = self._fetch_order(connection, order_url)
            except WIRE_ERRORS as exc:
                raise transport_error("polling the order", exc) from exc
            if order.status == messages.STATUS_INVALID:
                raise self._validation_failure(connection, presented, order)
            if order.status != messages.STATUS_PENDING:
                return order
            if time.monotonic() >= deadline:
                names = ", ".join(item.identifier for item in presented)
                raise IssuerError(
                    f"the CA did not validate {names} within the order timeout",
                    code="acme-timeout",
                    hint="the order is resumed on the next apply; raise order_timeout if the CA is slow",
                )
            self._poller.wait(attempt, parse_retry_after(response.headers.get("Retry-After"), self._now()),
                              self._now(), deadline)  # fmt: skip
            attempt += 1

    def _validation_failure(
        self, connection: AcmeConnection, presented: list[_Presented], order: messages.Order
    ) -> IssuerError:
        """The CA's reason for an invalid order, read from the first failed authorization."""
        for item in presented:
            try:
                authz = messages.Authorization.from_json(connection.post_as_get(item.authz_url).json())
            except WIRE_ERRORS as exc:
                return transport_error(f"reading the authorization for {item.identifier}", exc)
            if authz.status in (messages.STATUS_VALID, messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                continue
            errors = [c.error for c in authz.challenges if c.error is not None]
            if errors:
                return problem_error(
                    f"validating {item.identifier} ({item.challenge.chall.typ})",
                    errors[0],
                    code="acme-validation-failed",
                    hint="check that the challenge is reachable by the CA; the order is retried on the next apply",
                )
            return IssuerError(
                f"the authorization for {item.identifier} became {authz.status}", code="acme-validation-failed"
            )
        if order.error is not None:
            return problem_error("the order", order.error, code="acme-validation-failed")
        return IssuerError("the CA marked the order invalid during validation", code="acme-validation-failed")

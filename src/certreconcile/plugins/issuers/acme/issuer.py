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
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from acme import challenges, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy import b64, jwa, jwk
from josepy import errors as jose_errors

from certreconcile.actual.store import AcmeAccountRecord, AcmeStore, SessionSource
from certreconcile.crypto.envelope import open_envelope, seal
from certreconcile.crypto.keys import load_private_key, private_key_pem
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import RevocationReason
from certreconcile.errors import ConfigError, IssuerError
from certreconcile.plugins.issuers.acme import acme_account_context
from certreconcile.plugins.issuers.acme.client import (
    ALREADY_REPLACED,
    AcmeConnection,
    NewOrderWithReplaces,
    Poller,
    RecordingClientNetwork,
    ari_certificate_id,
    judge_failure,
    parse_retry_after,
    problem_error,
    transport_error,
)
from certreconcile.plugins.issuers.acme_config import AcmeIssuerConfig
from certreconcile.plugins.ports import (
    Dns01Provider,
    DnsTxtRecord,
    Http01Solver,
    IssuedCertificate,
    IssueRequest,
    Kms,
    RenewalInfo,
)
from certreconcile.retry import RetryPolicy

__all__ = ["AcmeIssuer"]

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL)
#: When the CA sends no Retry-After with renewal info (RFC 9773 §4.3.3 suggests 6 hours).
ARI_DEFAULT_RETRY = timedelta(hours=6)
#: What the wire can throw besides the CA's problem documents (messages.Error, caught first where it matters).
_WIRE_ERRORS = (requests.RequestException, acme_errors.Error, jose_errors.DeserializationError, ValueError)


@dataclass(frozen=True, slots=True)
class _Account:
    key: jwk.JWK
    url: str


@dataclass(slots=True)
class _Presented:
    """What was put in place for one authorization, so it can be removed again."""

    authz_url: str
    identifier: str
    challenge: messages.ChallengeBody
    response: challenges.ChallengeResponse  # what answers the challenge (the key authorization)
    token: str | None = None  # http-01
    record: DnsTxtRecord | None = None  # dns-01


def _split_chain(fullchain: str) -> tuple[str, str]:
    blocks = [match.group(0).strip() + "\n" for match in _PEM_BLOCK.finditer(fullchain)]
    if not blocks:
        raise IssuerError("the CA sent no certificate in the chain it returned", code="acme-empty-chain")
    return blocks[0], "".join(blocks[1:])


def _top_issuer_name(fullchain: str) -> str:
    """Common name of the issuer of the last certificate of a chain (the root it chains to)."""
    last = _PEM_BLOCK.findall(fullchain)[-1]
    cert = x509.load_pem_x509_certificate(last.encode())
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class AcmeIssuer:
    def __init__(
        self,
        name: str,
        config: AcmeIssuerConfig,
        store: SessionSource[AcmeStore],
        kms: Kms,
        *,
        http01: Http01Solver,
        dns_providers: Mapping[str, Dns01Provider],
        env: Mapping[str, str],
        ca_bundle: str | None = None,
        poller: Poller | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.directory_url = config.directory_url
        self._config = config
        self._store = store
        self._kms = kms
        self._http01 = http01
        self._dns_providers = dict(dns_providers)
        self._env = env
        self._verify: str | bool = ca_bundle if ca_bundle else True
        self._poller = poller or Poller()
        self._now = wall_clock or (lambda: datetime.now(UTC))
        #: Bounded retries of idempotent requests; sleeps through the poller's (injected) sleep.
        self.retry = retry or RetryPolicy(sleep=self._poller.sleep)
        self._order_timeout = config.order_timeout.delta
        self._lock = threading.Lock()
        self._directory: messages.Directory | None = None
        self._account: _Account | None = None
        self._local = threading.local()

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
        cert_pem, chain_pem = _split_chain(fullchain)
        return IssuedCertificate(cert_pem=cert_pem, chain_pem=chain_pem, ari_replaces=replaces)

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
        except _WIRE_ERRORS as exc:
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
        except _WIRE_ERRORS as exc:
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

    # --- HTTP-01 self-check (the facade's validate_acme_challenge) -----------------
    @property
    def http01_solver(self) -> Http01Solver:
        """The configured HTTP-01 solver (standalone server or webroot)."""
        return self._http01

    def key_authorization(self, token: str) -> str:
        """RFC 8555 §8.1: ``token.base64url(SHA-256 JWK thumbprint of the account key)``; loads or registers
        the account."""
        account = self._get_account(self._get_directory())
        return f"{token}.{b64.b64encode(account.key.thumbprint()).decode()}"

    # --- directory, account, connections ------------------------------------------
    def _get_directory(self) -> messages.Directory:
        with self._lock:
            if self._directory is None:
                try:
                    self._directory = AcmeConnection.fetch_directory(
                        self.directory_url, self._verify, self.retry, self._now
                    )
                except _WIRE_ERRORS as exc:
                    raise transport_error(f"reading the ACME directory {self.directory_url}", exc) from exc
            return self._directory

    def _offers(self, name: str) -> bool:
        try:
            self._get_directory()[name]
        except KeyError:
            return False
        return True

    def _directory_entry(self, name: str) -> str:
        try:
            return str(self._get_directory()[name])
        except KeyError as exc:
            raise IssuerError(f"the ACME directory has no {name} resource", code="acme-directory") from exc

    def _anonymous(self) -> RecordingClientNetwork:
        network: RecordingClientNetwork | None = getattr(self._local, "anonymous", None)
        if network is None:
            network = AcmeConnection.anonymous_network(self._verify)
            self._local.anonymous = network
        return network

    def _connection(self) -> AcmeConnection:
        connection: AcmeConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            directory = self._get_directory()
            account = self._get_account(directory)
            connection = AcmeConnection(
                directory, account.key, jwa.ES256, self._verify, retry=self.retry, now=self._now
            )
            connection.use_account(account.url)
            self._local.connection = connection
        return connection

    def _get_account(self, directory: messages.Directory) -> _Account:
        with self._lock:
            if self._account is None:
                self._account = self._load_or_register(directory)
            return self._account

    def _load_or_register(self, directory: messages.Directory) -> _Account:
        context = acme_account_context(self.directory_url)
        with self._store.session() as session:
            stored = session.get_acme_account(self.directory_url)
        if stored is None:
            private = ec.generate_private_key(ec.SECP256R1())
            key = jwk.JWKEC(key=private)
            account_url = self._register(directory, key)
            key_ref = seal(self._kms, private_key_pem(private), context)
            with self._store.session() as session:
                stored = session.put_acme_account(
                    AcmeAccountRecord(directory_url=self.directory_url, key_ref=key_ref, account_url=account_url)
                )
            if stored.account_url == account_url:
                return _Account(key=key, url=account_url)
            # Another process registered first: use its account (ours stays unused at the CA).
        pem = open_envelope(self._kms, stored.key_ref, context)
        return _Account(key=jwk.JWKEC(key=load_private_key(pem)), url=stored.account_url)

    def _register(self, directory: messages.Directory, key: jwk.JWK) -> str:
        connection = AcmeConnection(directory, key, jwa.ES256, self._verify, retry=self.retry, now=self._now)
        fields: dict[str, Any] = {"terms_of_service_agreed": True}
        if self._config.email:
            fields["email"] = self._config.email
        if self._config.eab is not None:
            kid = self._env.get(self._config.eab.key_id_env)
            hmac_key = self._env.get(self._config.eab.hmac_key_env)
            if not kid or not hmac_key:
                raise ConfigError(
                    f"issuer {self.name}: External Account Binding needs {self._config.eab.key_id_env}"
                    f" and {self._config.eab.hmac_key_env} in the environment",
                    code="acme-eab-missing",
                    hint="export both variables (the CA gives you the key id and the HMAC key)",
                )
            fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=kid, hmac_key=hmac_key, directory=directory
            )
        try:
            response = connection.post(directory["newAccount"], messages.NewRegistration.from_data(**fields))
        except messages.Error as exc:
            raise problem_error(f"registering an account at {self.directory_url}", exc, code="acme-account") from exc
        except _WIRE_ERRORS as exc:
            raise transport_error(f"registering an account at {self.directory_url}", exc) from exc
        location = response.headers.get("Location")
        if not location:
            raise IssuerError("the CA created an account but sent no account URL", code="acme-account")
        return location

    # --- the order -------------------------------------------------------------------
    def _fetch_order(self, connection: AcmeConnection, url: str) -> tuple[messages.Order, requests.Response]:
        response = connection.post_as_get(url)
        return messages.Order.from_json(response.json()), response

    def _resume_or_order(
        self, connection: AcmeConnection, request: IssueRequest
    ) -> tuple[str, messages.Order, str | None]:
        wanted = {name.lower() for name in request.domains}
        saved = request.journal.saved_order_url() if request.journal is not None else None
        if saved:
            try:
                order, _ = self._fetch_order(connection, saved)
            except _WIRE_ERRORS as exc:
                if judge_failure(connection.net, exc, idempotent=True, now=self._now).retry:
                    # The CA did not answer (after the bounded retries): never a second order for this change.
                    raise transport_error("reading the order placed by an earlier attempt", exc) from exc
                order = None  # gone or unreadable: place a new one
            if order is not None and order.status != messages.STATUS_INVALID:
                names = {identifier.value.lower() for identifier in order.identifiers or ()}
                if names == wanted:
                    return saved, order, None
        replaces: str | None = None
        if request.replaces_cert_pem is not None and self._offers("renewalInfo"):
            replaces = ari_certificate_id(request.replaces_cert_pem)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in request.domains]
        while True:
            payload = NewOrderWithReplaces(identifiers=identifiers, profile=self._config.profile, replaces=replaces)
            try:
                response = connection.post(self._directory_entry("newOrder"), payload)
                break
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
            except _WIRE_ERRORS as exc:
                raise transport_error("ordering a certificate", exc) from exc
        order_url = response.headers.get("Location")
        if not order_url:
            raise IssuerError("the CA created an order but sent no order URL", code="acme-order")
        order = messages.Order.from_json(response.json())
        if request.journal is not None:
            request.journal.record_order(order_url, str(order.status), self.directory_url)
        return order_url, order, replaces

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
                except _WIRE_ERRORS as exc:
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
                except _WIRE_ERRORS as exc:
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
        response, validation = challenge.chall.response_and_validation(connection.key)
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
            except _WIRE_ERRORS as exc:
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
            except _WIRE_ERRORS as exc:
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
            except _WIRE_ERRORS as exc:
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
            if preferred and _top_issuer_name(fullchain) != preferred:
                links = requests.utils.parse_header_links(response.headers.get("Link", ""))
                for link in links:
                    if link.get("rel") == "alternate" and link.get("url"):
                        alternate = connection.post_as_get(link["url"]).text
                        if _top_issuer_name(alternate) == preferred:
                            return alternate
        except messages.Error as exc:
            raise problem_error("downloading the certificate", exc, code="acme-download") from exc
        except _WIRE_ERRORS as exc:
            raise transport_error("downloading the certificate", exc) from exc
        return fullchain

"""A lean ACME (RFC 8555) client over certbot's ``acme`` wire objects and ``josepy``.

``acme.client.ClientNetwork`` signs every request (JWS, nonces, one ``badNonce`` retry) and
``acme.messages`` parses the resources; the flow itself lives here because certbot's
``ClientV2`` sleeps a fixed second before polling, knows no ARI ``replaces`` and cannot
resume an order by its URL. Polls start short, grow, and honour ``Retry-After``.

One :class:`AcmeConnection` per thread (its connection pool and nonce pool are not shared);
the directory and the account are shared. The signed requests of a connection go straight to
kept-alive HTTP/1.1 connections (:class:`DirectClientNetwork`, ``transport``):
``requests.Session.request``, and urllib3's pool manager under it, cost more CPU than the rest
of the request (settings merged per call, cookies, hooks, redirects an ACME POST never follows,
URL parsing and pool lookups), and with several orders in flight this process's CPU bounds the
issuance rate.
Behind an HTTP(S) proxy the ``requests`` path is kept.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from josepy import b64 as jose_b64
from josepy import errors as jose_errors
from josepy import interfaces as jose_interfaces
from josepy import json_util, jwa, jwk

from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme.transport import KeepAliveTransport
from certreconcile.retry import RetryPolicy, Verdict

__all__ = [
    "ALREADY_REPLACED",
    "AcmeConnection",
    "Poller",
    "RecordingClientNetwork",
    "ari_certificate_id",
    "endpoint_name",
    "parse_retry_after",
    "problem_error",
    "set_request_observer",
]

ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"
USER_AGENT = "certreconcile (+https://github.com/certreconcile/certreconcile)"

#: Told of every HTTP answer from a CA as (endpoint, status code, seconds from sending the request to
#: the answer read); `run` counts and times them for its metrics. None (the default): nothing is
#: observed. The endpoint is a resource name, never a URL.
RequestObserver = Callable[[str, int, float], None]
_request_observers: list[RequestObserver] = []  # at most one

_DIRECTORY_RESOURCES = ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo")
#: Path words of the resources the directory does not name (Let's Encrypt, Pebble, OpenBao), first match wins.
_PATH_WORDS = (
    ("renewal", "renewalInfo"),
    ("finalize", "finalize"),
    ("chal", "challenge"),
    ("authz", "authz"),
    ("authorization", "authz"),
    ("cert", "cert"),
    ("order", "order"),
    ("acct", "account"),
    ("account", "account"),
    ("nonce", "newNonce"),
    ("dir", "directory"),
)


def set_request_observer(observer: RequestObserver | None) -> None:
    """Install (or with None remove) the process-wide observer of CA requests."""
    _request_observers[:] = [observer] if observer is not None else []


def endpoint_name(url: str, directory: messages.Directory | None = None) -> str:
    """A bounded label for a CA URL: the directory resource it is, else its kind from the path."""
    if directory is not None:
        for resource in _DIRECTORY_RESOURCES:
            try:
                value = directory[resource]
            except (KeyError, AttributeError):
                continue
            if isinstance(value, str) and (url == value or (resource == "renewalInfo" and url.startswith(value))):
                return resource
    path = urllib.parse.urlsplit(url).path.lower()
    return next((name for word, name in _PATH_WORDS if word in path), "other")


def _notify(url: str, status: int, seconds: float, directory: messages.Directory | None) -> None:
    for observer in tuple(_request_observers):
        observer(endpoint_name(url, directory), status, seconds)


def _observe_requests(session: requests.Session, directory: messages.Directory | None) -> None:
    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        _notify(response.url, response.status_code, response.elapsed.total_seconds(), directory)

    session.hooks["response"].append(hook)


class RecordingClientNetwork(acme_client.ClientNetwork):
    """certbot's ``ClientNetwork`` that keeps the last answer, so a retry can read its status and ``Retry-After``.

    One network per thread (as the connection pools are), so ``last_response`` is this thread's.
    """

    last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response


#: Answers worth asking again (RFC 9110: the server could not handle the request now).
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def judge_failure(
    network: RecordingClientNetwork, exc: BaseException, *, idempotent: bool, now: Callable[[], datetime]
) -> Verdict:
    """May the ACME request that raised ``exc`` be sent again?

    ``badNonce`` always (RFC 8555 §6.5: the CA did not process the request; a new nonce is
    used); a lost connection, a timeout, a 5xx or 429 only for an ``idempotent`` request
    (GET, POST-as-GET, newNonce), honouring ``Retry-After``.
    """
    if isinstance(exc, messages.Error) and exc.code == "badNonce":
        return Verdict(True, None, "badNonce", immediate=True)
    if not idempotent or isinstance(exc, requests.exceptions.SSLError):
        return Verdict(False)
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return Verdict(True, None, type(exc).__name__)
    response = network.last_response
    if response is None or response.status_code not in _RETRYABLE_STATUS:
        return Verdict(False)
    moment = now()
    until = parse_retry_after(response.headers.get("Retry-After"), moment)
    wait = max(0.0, (until - moment).total_seconds()) if until is not None else None
    return Verdict(True, wait, f"HTTP {response.status_code}")


class DirectClientNetwork(RecordingClientNetwork):
    """certbot's ``ClientNetwork`` (JWS, nonces, ``badNonce`` retry, problem documents) over kept-alive connections.

    Only the transport differs: :class:`~certreconcile.plugins.issuers.acme.transport.KeepAliveTransport`
    (one kept-alive connection per CA host), TLS verified against ``verify`` (a CA bundle path,
    or True for certifi's bundle as requests uses), no redirects, no retries; the answer is handed
    back as a ``requests.Response`` and the errors as requests' (SSLError, ConnectionError, Timeout),
    so everything above is unchanged. With a proxy in ``session.proxies`` (read once from the
    environment) the request goes through requests.
    """

    def __init__(self, key: jwk.JWK, alg: jwa.JWASignature, verify: str | bool, directory: messages.Directory) -> None:
        super().__init__(key=key, alg=alg, verify_ssl=cast(bool, verify), user_agent=USER_AGENT, timeout=30)
        self._directory = directory
        self._transport = KeepAliveTransport(verify)

    def _wrap_in_jws(self, obj: jose_interfaces.JSONDeSerializable | None, nonce: str, url: str) -> str:
        """The flattened JWS of RFC 8555 §6.2, built directly (josepy's JWA signs, josepy's JWK names the key).

        Equivalent to ``acme.jws.JWS.sign``: protected header ``alg``, ``nonce``, ``url`` and
        ``kid`` (or ``jwk`` before the account exists), payload ``obj`` as JSON (empty for
        POST-as-GET), ES256/RS256 signature over ``protected.payload``; compact JSON instead of
        indented and no josepy header objects per request.
        """
        assert self.key is not None
        protected: dict[str, Any] = {"alg": self.alg.name, "nonce": jose_b64.b64encode(cast(bytes, nonce)).decode(),
                                     "url": url}  # fmt: skip
        if self.account is not None:
            protected["kid"] = self.account["uri"]
        else:
            protected["jwk"] = self.key.public_key().to_partial_json()
        payload = obj.json_dumps().encode() if obj else b""
        encoded = jose_b64.b64encode(json.dumps(protected, separators=(",", ":")).encode())
        signing_input = encoded + b"." + jose_b64.b64encode(payload)
        signature = self.alg.sign(self.key.key, signing_input)
        return json.dumps(
            {
                "protected": encoded.decode(),
                "payload": jose_b64.b64encode(payload).decode(),
                "signature": jose_b64.b64encode(signature).decode(),
            }
        )

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if args or self.session.proxies or set(kwargs) - {"data", "headers", "timeout"}:
            return super()._send_request(method, url, *args, **kwargs)
        headers = {"User-Agent": self.user_agent, **kwargs.get("headers", {})}
        sent = time.monotonic()
        seconds = kwargs.get("timeout", self._default_timeout)
        raw = self._transport.request(method, url, kwargs.get("data"), headers, seconds)
        response = requests.Response()
        response.status_code = raw.status
        response.reason = raw.reason
        response.headers = _header_dict(raw.headers)
        response._content = raw.body  # as requests' own adapter fills a Response
        response.url = url
        if "Accept" not in headers:
            response.encoding = "utf-8"  # as ClientNetwork does: ACME answers are UTF-8
        _notify(url, raw.status, time.monotonic() - sent, self._directory)
        self.last_response = response
        return response

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        """One attempt: :class:`AcmeConnection` retries ``badNonce`` (bounded), not certbot's single retry."""
        return self._post_once(*args, **kwargs)


def _header_dict(pairs: list[tuple[str, str]]) -> requests.structures.CaseInsensitiveDict[str]:
    """The headers as requests shows them: case-insensitive, a repeated header's values joined by ", "."""
    headers: requests.structures.CaseInsensitiveDict[str] = requests.structures.CaseInsensitiveDict()
    for name, value in pairs:
        before = headers.get(name)
        headers[name] = value if before is None else f"{before}, {value}"
    return headers


class NewOrderWithReplaces(messages.NewOrder):
    """``newOrder`` with RFC 9773's ``replaces`` (certbot's ``NewOrder`` lacks it)."""

    replaces: str | None = json_util.field("replaces", omitempty=True)


def ari_certificate_id(cert_pem: str) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER INTEGER content)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise IssuerError(
            "the certificate has no authority key identifier (ARI needs one)", code="acme-ari-id"
        ) from exc
    if aki.key_identifier is None:
        raise IssuerError("the certificate's authority key identifier has no key id", code="acme-ari-id")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(aki.key_identifier)}.{b64(serial_bytes)}"


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """``Retry-After`` as seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def problem_error(what: str, error: messages.Error, *, code: str = "acme-error", hint: str = "") -> IssuerError:
    """An RFC 7807 problem from the CA as one line: what we did, the problem type, its detail."""
    kind = (error.typ or "").rsplit(":", 1)[-1] or "error"
    detail = " ".join((error.detail or "").split())[:300]
    subproblems = getattr(error, "subproblems", None) or ()
    extra = "; ".join(
        f"{getattr(sub.identifier, 'value', '?')}: {' '.join((sub.detail or '').split())[:120]}"
        for sub in subproblems[:3]
    )
    if kind == "serverInternal":  # the CA failed, not the request: apply again later
        code, hint = "acme-server-error", "the CA had an internal error; the next apply tries again"
    return IssuerError(
        f"{what}: the CA answered {kind}: {detail}" + (f" ({extra})" if extra else ""),
        code=code,
        hint=hint or "see the CA's message; nothing was issued",
    )


@dataclass(slots=True)
class Poller:
    """Short first polls, doubling up to ``ceiling``; ``Retry-After`` wins when later.

    A CA answering within milliseconds (an internal CA, Pebble) costs a few milliseconds of
    waiting; a slow one is polled at most every ``ceiling`` seconds (or as it asks).
    """

    sleep: Callable[[float], None] = time.sleep
    first: float = 0.005
    ceiling: float = 2.0

    def wait(self, attempt: int, retry_after: datetime | None, now: datetime, deadline: float) -> None:
        delay = min(self.first * (2.0**attempt), self.ceiling)
        if retry_after is not None:
            delay = max(delay, (retry_after - now).total_seconds())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        self.sleep(max(0.0, min(delay, remaining)))


class AcmeConnection:
    """The signed channel of one thread to one directory, for one account key."""

    def __init__(
        self,
        directory: messages.Directory,
        key: jwk.JWK,
        alg: jwa.JWASignature,
        verify: str | bool,
        *,
        retry: RetryPolicy | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.directory = directory
        self.key = key
        self.retry = retry or RetryPolicy()
        self._now = now or (lambda: datetime.now(UTC))
        self.net = DirectClientNetwork(key, alg, verify, directory)
        self.challenge_key = cast(jwk.JWK, _ThumbprintOnce(key))  # what the challenges' key authorizations read
        self._resources = _directory_resources(directory)
        self._renewal_prefix = next((url for url, name in self._resources.items() if name == "renewalInfo"), None)
        _proxies_once(self.net.session, directory["newNonce"])
        _observe_requests(self.net.session, directory)  # for requests made through a proxy

    @staticmethod
    def anonymous_network(verify: str | bool) -> RecordingClientNetwork:
        """For unauthenticated GETs: the directory, renewal info."""
        network = RecordingClientNetwork(key=None, verify_ssl=cast(bool, verify), user_agent=USER_AGENT, timeout=30)
        _observe_requests(network.session, None)
        return network

    @staticmethod
    def anonymous_get(
        network: RecordingClientNetwork, url: str, retry: RetryPolicy, now: Callable[[], datetime]
    ) -> requests.Response:
        """An unauthenticated GET (idempotent): retried on a lost connection, a 5xx or 429 (bounded)."""
        return retry.call(
            f"GET {endpoint_name(url)}",
            lambda: network.get(url),
            lambda exc: judge_failure(network, exc, idempotent=True, now=now),
        )

    @staticmethod
    def fetch_directory(
        url: str, verify: str | bool, retry: RetryPolicy | None = None, now: Callable[[], datetime] | None = None
    ) -> messages.Directory:
        network = AcmeConnection.anonymous_network(verify)
        clock = now or (lambda: datetime.now(UTC))
        response = AcmeConnection.anonymous_get(network, url, retry or RetryPolicy(), clock)
        return messages.Directory.from_json(response.json())

    def _endpoint(self, url: str) -> str:
        """``endpoint_name(url, directory)``, with the directory's URLs looked up once, not per request."""
        name = self._resources.get(url)
        if name is not None:
            return name
        prefix = self._renewal_prefix
        return "renewalInfo" if prefix is not None and url.startswith(prefix) else endpoint_name(url)

    def use_account(self, account_url: str) -> None:
        self.net.account = messages.RegistrationResource(body=messages.Registration(), uri=account_url)

    def post(self, url: str, obj: Any, *, idempotent: bool = False) -> requests.Response:
        """A signed POST. ``badNonce`` is always retried with a fresh nonce (bounded); a lost
        connection, a timeout, a 5xx or 429 only when ``idempotent`` (POST-as-GET): a request that
        creates something (newOrder, finalize) is never sent twice, the journal resumes it instead."""
        new_nonce = self.directory["newNonce"]
        return self.retry.call(
            f"POST {self._endpoint(url)}",
            lambda: self.net.post(url, obj, new_nonce_url=new_nonce),
            lambda exc: judge_failure(self.net, exc, idempotent=idempotent, now=self._now),
        )

    def post_as_get(self, url: str) -> requests.Response:
        return self.post(url, None, idempotent=True)

    def get(self, url: str) -> requests.Response:
        return self.retry.call(
            f"GET {self._endpoint(url)}",
            lambda: self.net.get(url),
            lambda exc: judge_failure(self.net, exc, idempotent=True, now=self._now),
        )


def _directory_resources(directory: messages.Directory) -> dict[str, str]:
    """URL -> resource name of the directory's resources (the first resource of a URL named twice)."""
    resources: dict[str, str] = {}
    for resource in _DIRECTORY_RESOURCES:
        try:
            value = directory[resource]
        except (KeyError, AttributeError):
            continue
        if isinstance(value, str):
            resources.setdefault(value, resource)
    return resources


class _ThumbprintOnce:
    """The account key as ``acme.challenges`` reads it for a key authorization: only its RFC 7638
    thumbprint, computed once per hash instead of twice per challenge (JSON of the public key, hashed)."""

    def __init__(self, key: jwk.JWK) -> None:
        self._key = key
        self._thumbprints: dict[Any, bytes] = {}

    def thumbprint(self, hash_function: Any = None) -> bytes:
        if hash_function not in self._thumbprints:
            thumbprint = self._key.thumbprint() if hash_function is None else self._key.thumbprint(hash_function)
            self._thumbprints[hash_function] = thumbprint
        return self._thumbprints[hash_function]


def _proxies_once(session: requests.Session, url: str) -> None:
    """Read the proxy environment (HTTPS_PROXY, NO_PROXY) once, not at every request.

    requests re-reads the whole environment for each request when ``trust_env`` is set,
    which costs about a millisecond per call, a tenth of an issuance against a fast CA.
    """
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.trust_env = False


def transport_error(what: str, exc: Exception) -> IssuerError:
    """Network and protocol failures as one line (never a JWS, never a key)."""
    if isinstance(exc, messages.Error):
        return problem_error(what, exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return IssuerError(
            f"{what}: the CA's TLS certificate is not trusted",
            code="acme-tls",
            hint="set ca_bundle to the PEM file of the CA's TLS root (internal CAs, Pebble)",
        )
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return IssuerError(
            f"{what}: cannot reach the CA ({type(exc).__name__})",
            code="acme-unreachable",
            hint="check the directory URL and the network; the order resumes on the next apply",
        )
    answer = exc.args[0] if isinstance(exc, acme_errors.ClientError) and exc.args else None
    answer = answer[0] if isinstance(answer, tuple) and answer else answer
    if isinstance(answer, requests.Response) and answer.status_code >= 500:
        return IssuerError(
            f"{what}: the CA answered HTTP {answer.status_code}",
            code="acme-server-error",
            hint="the CA is failing or overloaded; the next apply tries again",
        )
    if isinstance(exc, acme_errors.ClientError | acme_errors.Error | jose_errors.DeserializationError | ValueError):
        return IssuerError(f"{what}: unexpected answer from the CA ({type(exc).__name__})", code="acme-protocol")
    return IssuerError(f"{what}: {type(exc).__name__}", code="acme-error")

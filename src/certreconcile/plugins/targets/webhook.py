"""The webhook target: an HTTPS POST of a certificate, its chain and its private key.

The body is one JSON object (UTF-8, compact)::

    {"name": ..., "domains": [...], "fingerprint": ..., "certificate": ..., "chain": ..., "private_key": ...}

``fingerprint`` is the leaf's SHA-256 (lower-case hex of the DER); ``certificate``, ``chain``
and ``private_key`` are PEM (PKCS#8 key). The receiver must answer 2xx with a JSON object
``{"fingerprint": "<the same fingerprint>"}``: only that echo confirms the delivery (a webhook
cannot be asked later what it serves, so without ``verify`` the executor trusts this echo).

Signature (with ``secret_env``; the secret is the variable's value, UTF-8)::

    X-Certreconcile-Timestamp: <Unix time in whole seconds>
    X-Certreconcile-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

where ``timestamp`` is the header's exact ASCII text and ``body`` the exact bytes received.
A receiver recomputes it, compares in constant time, and refuses a timestamp more than a few
minutes away from its clock (replay). With ``client_cert``/``client_key`` the connection also
carries a TLS client certificate (mutual TLS); at least one of the two is required.

Address rules (design 5c): ``https://`` only; redirects are never followed (a 3xx fails,
naming the status); the host is resolved once and EVERY address it resolves to is checked
before any connection: unspecified, multicast and broadcast addresses are always refused;
link-local (169.254.0.0/16, fe80::/10) and cloud-metadata addresses (169.254.169.254,
fd00:ec2::254, fd20:ce::254, 100.100.100.200), also inside IPv4-mapped, NAT64 and 6to4 IPv6
addresses, are refused unless ``allow_link_local``. Loopback and private (RFC 1918, ULA)
addresses are allowed: receivers are usually internal services, and the declarations are
reviewed in Git. The connection then goes to the checked address itself (the URL's host
stays the Host header, the TLS SNI and the name the server certificate is checked against),
so a DNS answer that changes between the check and the connection (rebinding) cannot move it.
Proxy variables and ``.netrc`` are ignored.

The private key is only ever in the request body: no error text, log line or exception
chain raised here holds it (errors name the URL without user info or query, the status, the
httpx error type, never the body or the response).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from certreconcile import __version__
from certreconcile.clock import Clock, SystemClock
from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.domain.addresses import address_refusal
from certreconcile.errors import TargetError
from certreconcile.plugins.paths import optional_declared_path
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.tls_contexts import ContextCache
from certreconcile.plugins.targets.webhook_config import WebhookTargetConfig

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookTarget",
    "address_refusal",
    "sign_body",
]

SIGNATURE_HEADER = "X-Certreconcile-Signature"
TIMESTAMP_HEADER = "X-Certreconcile-Timestamp"

Resolver = Callable[[str, int], list[str]]

_MAX_RESPONSE_BYTES = 64 * 1024

_CONTEXTS = ContextCache()  # one per process: a fan-out's deliveries share their TLS contexts


def sign_body(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Certreconcile-Signature`` value: ``sha256=`` + hex HMAC-SHA256 over ``timestamp.body``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _normalise_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


class WebhookTarget:
    def __init__(
        self,
        name: str,
        config: WebhookTargetConfig,
        *,
        env: Mapping[str, str],
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
        timeout: timedelta = timedelta(seconds=10),
        clock: Clock | None = None,
        resolve: Resolver = _system_resolver,
    ) -> None:
        self.name = name
        self._url = config.url
        parts = urlsplit(config.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "https" or not parts.hostname or port in (-1, 0):
            # The schema allows only https:// URLs; this guards programmatic construction.
            raise TargetError(
                f"target {name}: the webhook url must be an https:// URL with a host",
                code="target-config-invalid",
                hint="the body holds the private key: plain http is never used",
            )
        if parts.username is not None or parts.password is not None:
            raise TargetError(
                f"target {name}: the webhook url must not hold user:password@",
                code="target-config-invalid",
                hint="authenticate with secret_env (signed body) or client_cert/client_key (mutual TLS)",
            )
        self._host = parts.hostname
        self._port = port or 443
        self._target_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._where = (
            f"https://{self._bracketed(self._host)}" + (f":{port}" if port else "") + (parts.path or "/")
        )
        self._secret_env = config.secret_env
        self._client_cert = optional_declared_path(config.client_cert, base_dir)
        self._client_key = optional_declared_path(config.client_key, base_dir)
        self._ca_bundle = optional_declared_path(config.ca_bundle, base_dir)
        self._allow_link_local = config.allow_link_local
        self._headers = dict(config.headers)
        self._env = env
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni
        self._timeout = timeout.total_seconds()
        self._clock: Clock = clock or SystemClock()
        self._resolve = resolve

    @staticmethod
    def _bracketed(host: str) -> str:
        return f"[{host}]" if ":" in host else host

    def _fail(self, message: str, code: str, hint: str = "") -> TargetError:
        return TargetError(f"target {self.name}: {message}", code=code, hint=hint)

    # ------------------------------------------------------------------ pieces of a delivery

    def _secret(self) -> bytes | None:
        if self._secret_env is None:
            return None
        value = self._env.get(self._secret_env) or ""
        if not value:
            raise self._fail(
                f"the environment variable {self._secret_env} (the webhook signing secret) is not set",
                "target-secret-missing",
                f"export {self._secret_env}=<the secret shared with the receiver>",
            )
        return value.encode("utf-8")

    def _tls_context(self) -> ssl.SSLContext:
        """The context of these files, shared with the other deliveries naming them (see ``tls_contexts``)."""
        return _CONTEXTS.get((self._ca_bundle, self._client_cert, self._client_key), self._new_tls_context)

    def _new_tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self._ca_bundle) if self._ca_bundle else None)
        except (OSError, ssl.SSLError) as exc:
            raise self._fail(
                f"cannot read the CA bundle {self._ca_bundle} ({type(exc).__name__})",
                "target-config-invalid",
                "ca_bundle must be a readable PEM file of CA certificates",
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._client_cert is not None and self._client_key is not None:
            try:
                # An encrypted key fails here instead of prompting on the terminal.
                context.load_cert_chain(str(self._client_cert), str(self._client_key), password=_no_password)
            except (OSError, ssl.SSLError) as exc:
                # Names the files, never their content (the client key).
                raise self._fail(
                    f"cannot load the client certificate {self._client_cert} with the key {self._client_key}"
                    f" ({type(exc).__name__})",
                    "target-config-invalid",
                    "client_cert and client_key must be readable PEM files of one key pair",
                ) from None
        return context

    def _addresses(self) -> list[str]:
        """Resolve the host once and check every address; refused before any connection."""
        try:
            resolved = self._resolve(self._host, self._port)
        except (OSError, UnicodeError) as exc:
            raise self._fail(
                f"cannot resolve {self._host} ({type(exc).__name__})",
                "target-unreachable",
                "check the webhook url and DNS",
            ) from exc
        if not resolved:
            raise self._fail(f"{self._host} resolves to no address", "target-unreachable")
        addresses: list[str] = []
        for text in resolved:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            why = address_refusal(address, allow_link_local=self._allow_link_local)
            if why is not None:
                shown = self._host if self._host == str(address) else f"{self._host} ({address})"
                raise self._fail(
                    f"refused to send the webhook to {shown}: {why}",
                    "target-address-refused",
                    "use a routable address; link-local and metadata addresses need allow_link_local: true",
                )
            addresses.append(str(address))
        return addresses

    def _body(self, bundle: DeployBundle) -> bytes:
        document = {
            "name": bundle.name,
            "domains": list(bundle.domains),
            "fingerprint": bundle.fingerprint,
            "certificate": bundle.cert_pem,
            "chain": bundle.chain_pem,
            "private_key": bundle.key_pem.reveal().decode("ascii"),
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8")

    def _request_headers(self, body: bytes) -> dict[str, str]:
        headers = dict(self._headers)
        default_port = self._port == 443
        headers["Host"] = self._bracketed(self._host) + ("" if default_port else f":{self._port}")
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = f"certreconcile/{__version__}"
        secret = self._secret()
        if secret is not None:
            timestamp = str(int(self._clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign_body(secret, timestamp, body)
        return headers

    # ------------------------------------------------------------------ Target

    def deploy(self, bundle: DeployBundle) -> None:
        """POST the bundle; succeed only on a 2xx answer echoing the fingerprint. Safe to repeat."""
        addresses = self._addresses()
        body = self._body(bundle)
        headers = self._request_headers(body)
        context = self._tls_context()
        # The SNI and the certificate check use the URL's host; the connection goes to the checked address.
        extensions = {} if _is_ip_literal(self._host) else {"sni_hostname": self._host}
        last_error: httpx.TransportError | None = None
        with httpx.Client(
            verify=context,
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            for address in addresses:
                url = f"https://{self._bracketed(address)}:{self._port}{self._target_path}"
                request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
                try:
                    response = client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last_error = exc  # the next address, if the host has several
                    continue
                except httpx.TimeoutException as exc:
                    raise self._fail(
                        f"{self._where} did not answer within {self._timeout:g}s ({type(exc).__name__})",
                        "target-unreachable",
                        "check the receiver, or raise the webhook timeout",
                    ) from exc
                except httpx.HTTPError as exc:
                    raise self._fail(
                        f"the POST to {self._where} failed ({type(exc).__name__})", "target-unreachable"
                    ) from exc
                try:
                    self._check_answer(response, bundle.fingerprint)
                finally:
                    response.close()
                return
        assert last_error is not None
        raise self._fail(
            f"cannot connect to {self._where} ({type(last_error).__name__}: {_first_line(last_error)})",
            "target-unreachable",
            "check the receiver is up, its TLS certificate and ca_bundle (and client_cert for mutual TLS)",
        ) from last_error

    def _check_answer(self, response: httpx.Response, fingerprint: str) -> None:
        status = response.status_code
        if 300 <= status < 400:
            raise self._fail(
                f"{self._where} answered {status} (a redirect): redirects are never followed",
                "target-redirect-refused",
                "point url at the final receiver address",
            )
        if not 200 <= status < 300:
            raise self._fail(
                f"{self._where} answered {status}",
                "target-rejected",
                "see the receiver's logs (401/403: check the signing secret and the client certificate)",
            )
        raw = b""
        try:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > _MAX_RESPONSE_BYTES:
                    break
        except httpx.HTTPError as exc:
            raise self._fail(
                f"reading the answer of {self._where} failed ({type(exc).__name__})", "target-unreachable"
            ) from exc
        echoed: object = None
        try:
            answer = json.loads(raw) if len(raw) <= _MAX_RESPONSE_BYTES else None
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            echoed = answer.get("fingerprint")
        if not isinstance(echoed, str):
            raise self._fail(
                f"{self._where} answered {status} without a fingerprint",
                "target-unconfirmed",
                'the receiver must answer {"fingerprint": "<the fingerprint it received>"}',
            )
        if _normalise_fingerprint(echoed) != fingerprint:
            shown = echoed[:16] if all(c in "0123456789abcdefABCDEF:" for c in echoed) else "something else"
            raise self._fail(
                f"{self._where} confirmed {shown} instead of {fingerprint[:16]}",
                "target-unconfirmed",
                "the receiver must echo the fingerprint of the certificate it was sent",
            )

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        # A webhook cannot be asked what it serves: deploy()'s echo was the confirmation.
        return TargetObservation(fingerprint=None, unknown=True)

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout


def _no_password() -> bytes:
    return b""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no detail"

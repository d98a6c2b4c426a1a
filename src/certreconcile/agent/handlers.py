"""The agent's operations (fleet.protocol): a request body in, a response model out, or a :class:`Refusal`.

:func:`handle` decodes the body into the operation's request model (unknown fields refused), checks
its timestamp against the agent's clock (both ways) and its nonce against those seen in the window,
then runs the operation. A refusal writes nothing and says why in one line, never with a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ValidationError

import certreconcile
from certreconcile.agent.identity import (
    AgentRefusedCertificate,
    agent_csr,
    check_renewed_certificate,
    install_certificate,
    load_agent_key,
)
from certreconcile.agent.runtime import AgentRuntime
from certreconcile.crypto.keys import load_private_key, public_key_matches
from certreconcile.domain.certs import fingerprint_of_der, read_cert_facts
from certreconcile.domain.durations import format_duration
from certreconcile.errors import TargetError
from certreconcile.fleet.protocol import (
    OPERATIONS,
    CertificateRequest,
    CertificateResponse,
    CsrRequest,
    CsrResponse,
    DeployRequest,
    DeployResponse,
    HelloRequest,
    HelloResponse,
    ObserveRequest,
    ObserveResponse,
    RequestBase,
)
from certreconcile.plugins.ports import DeployBundle, SecretBytes, Target
from certreconcile.plugins.targets.wait import wait_until_served

__all__ = ["Refusal", "handle"]


class Refusal(Exception):
    """A request the agent refuses: the HTTP status and a registered error code, a one-line message, a hint."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint


def handle(runtime: AgentRuntime, operation: str, body: bytes) -> BaseModel:
    """Decode, check freshness and nonce, run ``operation``; raises :class:`Refusal`."""
    request_model, _ = OPERATIONS[operation]
    request = _decode(request_model, operation, body)
    _check_fresh(runtime, request)
    handler: Callable[[AgentRuntime, Any], BaseModel] = _HANDLERS[operation]
    return handler(runtime, request)


def _decode(model: type[RequestBase], operation: str, body: bytes) -> RequestBase:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            what = f"`{where}` is not a field of a {operation} request"
        else:
            what = f"`{where}`: {error['msg']}" if where else str(error["msg"])
        raise Refusal(
            400,
            "agent-request-invalid",
            f"invalid {operation} request: {what}",
            "a request names a local target and a certificate, never a path; see certreconcile.fleet.protocol",
        ) from None


def _check_fresh(runtime: AgentRuntime, request: RequestBase) -> None:
    now = runtime.clock.now()
    window = runtime.config.request_window
    skew = request.timestamp - now
    if abs(skew) > window:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        raise Refusal(
            400,
            "agent-request-stale",
            f"the request's timestamp {request.timestamp.isoformat()} is {format_duration(abs(skew))} {direction} "
            f"the agent's clock ({now.isoformat()}); the window is {format_duration(window)}",
            "check both hosts' clocks (NTP); a request is only valid within the window",
        )
    if not runtime.nonces.accept(request.nonce, request.timestamp, now):
        raise Refusal(
            409,
            "agent-request-replayed",
            "the request's nonce was already used: a replayed request",
            "send each request with a fresh nonce (fleet.protocol.new_nonce)",
        )


def _target(runtime: AgentRuntime, name: str) -> Target:
    target = runtime.targets.get(name)
    if target is None:
        declared = ", ".join(sorted(runtime.targets)) or "none"
        raise Refusal(
            404,
            "agent-target-unknown",
            f"agent {runtime.config.name!r} has no local target {name!r} (declared: {declared})",
            f"declare it in the agent's configuration ({runtime.config.path}), or name one of its targets",
        )
    return target


def _mismatch(message: str) -> Refusal:
    return Refusal(422, "agent-bundle-mismatch", message, "send the certificate with its own key and fingerprint")


def _bundle(request: DeployRequest) -> DeployBundle:
    """The bundle, once its key matches its certificate and its fingerprint is the certificate's."""
    try:
        cert = x509.load_pem_x509_certificate(request.cert_pem.encode())
    except ValueError:
        raise _mismatch("cert_pem is not a PEM certificate") from None
    key_pem = SecretBytes(request.key_pem.get_secret_value().encode())
    try:
        key = load_private_key(key_pem)
    except (ValueError, TypeError):
        raise _mismatch("key_pem is not an unencrypted PEM private key (ECDSA or RSA)") from None
    if not public_key_matches(request.cert_pem, key):
        raise _mismatch("the key does not match the certificate's public key")
    actual = fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))
    if actual != request.fingerprint:
        raise _mismatch(f"fingerprint {request.fingerprint} is not the certificate's ({actual})")
    return DeployBundle(
        name=request.name,
        domains=request.domains,
        cert_pem=request.cert_pem,
        chain_pem=request.chain_pem,
        key_pem=key_pem,
        fingerprint=request.fingerprint,
    )


def deploy(runtime: AgentRuntime, request: DeployRequest) -> DeployResponse:
    """Deploy into the local target unless it already serves the fingerprint, then wait until it does."""
    target = _target(runtime, request.target)
    bundle = _bundle(request)
    answer = {"target": request.target, "name": request.name}
    with runtime.lock_for(request.target):
        seen = target.observe(request.name, request.domains)
        if seen.fingerprint == request.fingerprint:
            return DeployResponse(**answer, fingerprint=seen.fingerprint, verified=True, changed=False, attempts=1)
        try:
            target.deploy(bundle)
        except TargetError as exc:
            failure = exc.one_line()
            return DeployResponse(**answer, fingerprint=seen.fingerprint, verified=False, changed=True, error=failure)
        outcome = wait_until_served(target, request.name, request.domains, request.fingerprint)
    served = outcome.last.fingerprint
    if outcome.verified and outcome.last.unknown:
        served = request.fingerprint  # no way to look: the target's deploy confirmed it (a webhook)
    error: str | None = None
    if not outcome.verified:
        error = outcome.last.error or f"target {request.target} serves {served or 'nothing'}, not {request.fingerprint}"
    return DeployResponse(
        **answer, fingerprint=served, verified=outcome.verified, changed=True, attempts=outcome.attempts, error=error
    )


def observe(runtime: AgentRuntime, request: ObserveRequest) -> ObserveResponse:
    seen = _target(runtime, request.target).observe(request.name, request.domains)
    return ObserveResponse(
        target=request.target,
        name=request.name,
        fingerprint=seen.fingerprint,
        serial_number=seen.serial_number,
        not_after=seen.not_after,
        error=seen.error,
        unknown=seen.unknown,
    )


def hello(runtime: AgentRuntime, request: HelloRequest) -> HelloResponse:
    _, facts = runtime.identity.current()
    return HelloResponse(
        name=runtime.config.name,
        version=certreconcile.__version__,
        targets=tuple(sorted(runtime.targets)),
        cert_fingerprint=facts.fingerprint,
        cert_serial=facts.serial_number,
        cert_not_after=facts.not_after,
    )


def csr(runtime: AgentRuntime, request: CsrRequest) -> CsrResponse:
    """A CSR signed by the agent's existing key (the key file is only read)."""
    return CsrResponse(csr_pem=agent_csr(load_agent_key(runtime.config.tls.key_file), runtime.config.name))


def certificate(runtime: AgentRuntime, request: CertificateRequest) -> CertificateResponse:
    """Install a renewed certificate for the agent's own key; new connections are served with it."""
    config = runtime.config
    with runtime.certificate_lock:
        try:
            check_renewed_certificate(
                request.cert_pem, request.ca_pem, tls=config.tls, name=config.name, now=runtime.clock.now()
            )
        except AgentRefusedCertificate as exc:
            status = 400 if exc.code == "agent-request-invalid" else 422
            raise Refusal(status, exc.code, str(exc), "sign a CSR from this agent (`csr`) with the fleet CA") from None
        context = install_certificate(config.tls, request.cert_pem)
        facts = read_cert_facts(request.cert_pem)
        runtime.identity.replace(context, facts)
    return CertificateResponse(fingerprint=facts.fingerprint, serial=facts.serial_number, not_after=facts.not_after)


_HANDLERS: dict[str, Callable[[AgentRuntime, Any], BaseModel]] = {
    "hello": hello,
    "deploy": deploy,
    "observe": observe,
    "csr": csr,
    "certificate": certificate,
}

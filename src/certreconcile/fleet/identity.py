"""The applier's identity towards the agents: an ephemeral key in memory, a short certificate, a TLS context.

The key is generated in this process and never written anywhere: :func:`client_context` hands
the certificate and key to OpenSSL through an anonymous memory file (``memfd_create``) read at
``/proc/self/fd/N`` and closed at once, never a file on a disk. :class:`IdentitySource` mints the
identity on first need (the fleet CA opened with the KMS) and again once half its life is gone,
for long ``run`` processes.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certreconcile.clock import Clock
from certreconcile.errors import CertReconcileError
from certreconcile.fleet.ca import FleetCa
from certreconcile.fleet.protocol import APPLIER_URI

__all__ = ["APPLIER_LIFETIME", "ApplierIdentity", "IdentitySource", "client_context", "mint_applier"]

APPLIER_LIFETIME = timedelta(hours=1)
#: A fleet CA that could not be opened (no CA yet, the KMS refusing) is not asked again this soon:
#: ``plan --refresh`` over many agent targets asks the KMS once, not once per target.
RETRY_OPEN_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class ApplierIdentity:
    """A minted applier identity. Its repr never shows the key."""

    cert_pem: str
    ca_pem: str  # the fleet CA: the only trust anchor for the agents' certificates
    not_before: datetime
    not_after: datetime
    _key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"ApplierIdentity(not_after={self.not_after.isoformat()})"

    def half_gone(self, now: datetime) -> bool:
        return now >= self.not_before + (self.not_after - self.not_before) / 2

    def context(self) -> ssl.SSLContext:
        return client_context(self.cert_pem, self._key, self.ca_pem)


def mint_applier(ca: FleetCa, now: datetime, lifetime: timedelta = APPLIER_LIFETIME) -> ApplierIdentity:
    """A fresh key (EC P-256, in memory) and its certificate: URI SAN ``APPLIER_URI``, clientAuth."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_applier(key.public_key(), APPLIER_URI, now, lifetime)
    return ApplierIdentity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ca_pem=ca.cert_pem,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        _key=key,
    )


def client_context(cert_pem: str, key: ec.EllipticCurvePrivateKey, ca_pem: str) -> ssl.SSLContext:
    """A TLS client context: this certificate and key, trusting ``ca_pem`` only, TLS 1.2 or newer.

    The peer's name is not checked by OpenSSL (agents are named by a URI SAN, checked by the
    client after the handshake); its chain to ``ca_pem`` is.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    load_chain_from_memory(context, cert_pem.encode() + key_pem)
    return context


def load_chain_from_memory(context: ssl.SSLContext, pem: bytes) -> None:
    """``context.load_cert_chain`` from bytes, through an anonymous memory file closed right after."""
    fd = os.memfd_create("certreconcile-identity", os.MFD_CLOEXEC)
    try:
        view = memoryview(pem)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class IdentitySource:
    """One lazily minted applier identity, shared by every agent target of a process.

    ``open_ca`` opens the fleet CA (store and KMS); when it fails, :meth:`context` raises its error
    each time it is asked (``plan --refresh`` without the KMS shows the agents unreachable with it).
    """

    def __init__(self, open_ca: Callable[[], FleetCa], clock: Clock, lifetime: timedelta = APPLIER_LIFETIME) -> None:
        self._open_ca = open_ca
        self._clock = clock
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._ca: FleetCa | None = None
        self._identity: ApplierIdentity | None = None
        self._context: ssl.SSLContext | None = None
        self._failure: tuple[CertReconcileError, datetime] | None = None

    def __repr__(self) -> str:
        return "IdentitySource()"

    def ca(self) -> FleetCa:
        with self._lock:
            if self._ca is None:
                now = self._clock.now()
                if self._failure is not None and now - self._failure[1] < RETRY_OPEN_AFTER:
                    failed = self._failure[0]
                    raise CertReconcileError(failed.message, code=failed.code, hint=failed.hint)
                try:
                    self._ca = self._open_ca()
                except CertReconcileError as exc:
                    self._failure = (exc, now)
                    raise
            return self._ca

    def identity(self) -> ApplierIdentity:
        self.context()
        assert self._identity is not None
        return self._identity

    def context(self) -> ssl.SSLContext:
        ca = self.ca()
        with self._lock:
            now = self._clock.now()
            if self._identity is None or self._context is None or self._identity.half_gone(now):
                try:
                    identity = mint_applier(ca, now, self._lifetime)
                    self._context = identity.context()
                except (ssl.SSLError, OSError) as exc:
                    raise CertReconcileError(
                        f"cannot load the applier's TLS identity: {type(exc).__name__}", code="fleet-identity-failed"
                    ) from exc
                self._identity = identity
            return self._context

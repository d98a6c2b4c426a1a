"""The ``example_bundle`` target kind: ``<dir>/<name>.<suffix>`` holds the key, the certificate and its chain.

A kind module as certreconcile finds it (entry point ``certreconcile.targets``): ``Config``, ``create``
and ``SUMMARY``; the adapter is :class:`BundleTarget`. It uses only certreconcile's public plug-in
surface: the wire field types (``certreconcile.desired.fields``), the ports and the shared
verification settings.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import Duration, ParsedDuration, TargetDir, Wire
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.verification import DEFAULT_VERIFY_TIMEOUT, verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.registry import PluginContext

__all__ = ["SUMMARY", "BundleTarget", "BundleTargetConfig", "Config", "create"]

SUMMARY = "One PEM bundle per certificate (key, certificate, chain) in a directory."


class BundleTargetConfig(Wire):
    """Write ``<dir>/<name>.<suffix>``: the private key, then the certificate and its chain (0600)."""

    dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    suffix: str = Field(default="bundle.pem", pattern=r"^[a-z0-9.]+$")
    """File name suffix."""
    settle: Duration = ParsedDuration("1s")
    """Parsed once, at validation (a duration field of a third-party kind)."""


Config = BundleTargetConfig


class BundleTarget:
    def __init__(
        self,
        name: str,
        config: BundleTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        directory = Path(config.dir)
        self._dir = directory if directory.is_absolute() else base_dir / directory
        self._suffix = config.suffix
        self.settle = config.settle.delta
        self._verify_timeout = verify_timeout

    def path(self, certificate_name: str) -> Path:
        return self._dir / f"{certificate_name}.{self._suffix}"

    def deploy(self, bundle: DeployBundle) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        content = bundle.key_pem.reveal() + bundle.fullchain_pem.encode()
        fd, temporary = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content)
        finally:
            os.close(fd)
        os.replace(temporary, self.path(bundle.name))

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            text = self.path(name).read_bytes()
        except OSError as exc:
            return TargetObservation(fingerprint=None, error=f"{self.path(name)}: {exc.strerror}")
        start = text.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            return TargetObservation(fingerprint=None, error=f"{self.path(name)} holds no certificate")
        leaf = x509.load_pem_x509_certificate(text[start:])
        return TargetObservation(
            fingerprint=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
            serial_number=format(leaf.serial_number, "x"),
            not_after=leaf.not_valid_after_utc,
        )

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout


def create(spec: TargetSpec, context: PluginContext) -> BundleTarget:
    assert isinstance(spec.config, BundleTargetConfig)
    settings = verification(spec)
    return BundleTarget(spec.name, spec.config, context.desired_dir, **settings)

"""The ``local_ca`` issuer kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.issuers.local_ca`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Lifetime,
    ParsedDuration,
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.actual.store import LocalCaStore, SessionSource
    from certreconcile.desired.model import IssuerSpec
    from certreconcile.plugins.ports import Issuer, Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "certificate_lifetime", "config_findings", "create"]

SUMMARY = 'A private CA run by certreconcile.'

class LocalCaConfig(Wire):
    """A private CA run by certreconcile itself (its key wrapped by the KMS)."""

    common_name: str = Field(default="certreconcile local CA", min_length=1)
    """Common name of the CA certificate."""
    lifetime: Lifetime = ParsedDuration("90d")
    """Lifetime of each issued certificate."""
    ca_lifetime: Lifetime = ParsedDuration("3650d")
    """Lifetime of the CA certificate itself."""


Config = LocalCaConfig


def create(spec: IssuerSpec, context: PluginContext, store: SessionSource[LocalCaStore], kms: Kms) -> Issuer:
    from certreconcile.plugins.issuers.local_ca import LocalCaIssuer

    assert isinstance(spec.config, LocalCaConfig)
    return LocalCaIssuer(spec.name, spec.config, store, kms)


def certificate_lifetime(config: LocalCaConfig) -> timedelta | None:
    """The lifetime of each certificate it issues (None when invalid: reported on the issuer)."""
    return config.lifetime.delta_or_none


def config_findings(config: LocalCaConfig) -> Iterator[tuple[tuple[str | int, ...], str, str, str]]:
    """Certificates may not outlive the CA: ``(path in the config, code, message, hint)``."""
    lifetime, ca_lifetime = config.lifetime.delta_or_none, config.ca_lifetime.delta_or_none
    if lifetime is not None and ca_lifetime is not None and lifetime > ca_lifetime:
        code = "lifetime-exceeds-ca-lifetime"
        yield (
            ("lifetime",),
            code,
            f"certificates would outlive the CA ({config.lifetime} > {config.ca_lifetime})",
            "shorten lifetime or lengthen ca_lifetime",
        )

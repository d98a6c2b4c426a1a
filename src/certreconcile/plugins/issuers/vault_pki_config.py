"""The ``vault_pki`` issuer kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.issuers.vault_pki`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Lifetime,
)
from certreconcile.plugins.vault_config import VaultConnectionConfig, vault_login

if TYPE_CHECKING:
    from certreconcile.desired.model import IssuerSpec
    from certreconcile.plugins.ports import Issuer, Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'A PKI role of Vault or OpenBao.'

class VaultPkiIssuerConfig(VaultConnectionConfig):
    """A Vault or OpenBao PKI role signs each CSR (``<mount>/sign/<role>``)."""

    mount: str = Field(default="pki", min_length=1)
    """Mount path of the PKI secrets engine."""
    role: str = Field(min_length=1)
    """The PKI role that signs: it decides the allowed names, key types and maximum TTL."""
    ttl: Lifetime | None = None
    """Lifetime requested for each certificate (capped by the role's max_ttl); null: the role's ttl."""


Config = VaultPkiIssuerConfig


def create(spec: IssuerSpec, context: PluginContext, store: object, kms: Kms) -> Issuer:
    """No I/O and no credentials needed here: hvac logs in at the first signature. The store is unused."""
    from certreconcile.plugins.issuers.vault_pki import VaultPkiIssuer
    from certreconcile.plugins.paths import optional_declared_path

    assert isinstance(spec.config, VaultPkiIssuerConfig)
    config = spec.config
    return VaultPkiIssuer(
        spec.name,
        url=config.url,
        role=config.role,
        login=vault_login(config, context),
        mount=config.mount,
        ttl=config.ttl.delta if config.ttl is not None else None,
        namespace=config.namespace,
        ca_bundle=optional_declared_path(config.ca_bundle, context.desired_dir),
        env=context.env,
    )

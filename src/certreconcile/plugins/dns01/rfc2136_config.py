"""The ``rfc2136`` DNS-01 provider kind: its configuration and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    HostPort,
    Wire,
)
from certreconcile.plugins.dns01 import propagation_waiter

if TYPE_CHECKING:
    from certreconcile.desired.model import PluginSpec
    from certreconcile.plugins.ports import Dns01Provider
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'RFC 2136 dynamic updates with TSIG.'

class Rfc2136Config(Wire):
    """DNS-01 through RFC 2136 dynamic updates signed with TSIG."""

    server: HostPort
    """The primary name server accepting updates."""
    tsig_key_name: str = Field(min_length=1)
    """Name of the TSIG key."""
    tsig_secret_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the base64 TSIG secret (never the secret)."""
    tsig_algorithm: Literal["hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"] = (
        "hmac-sha256"
    )
    """TSIG algorithm."""
    zone: str | None = Field(default=None, min_length=1)
    """The zone to update (e.g. example.com); null: found by SOA queries to the server."""


Config = Rfc2136Config


def create(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01.rfc2136 import Rfc2136Provider

    assert isinstance(spec.config, Rfc2136Config)
    return Rfc2136Provider(spec.name, spec.config, env=context.env, propagation=propagation_waiter(spec))

"""The ``cloudflare`` DNS-01 provider kind: its configuration and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    FsPath,
    Wire,
)
from certreconcile.plugins.dns01 import propagation_waiter

if TYPE_CHECKING:
    from certreconcile.desired.model import PluginSpec
    from certreconcile.plugins.ports import Dns01Provider
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'Cloudflare DNS.'

class CloudflareConfig(Wire):
    """DNS-01 through the Cloudflare DNS records API (v4), with an API token (Zone.DNS:Edit)."""

    api_token_env: str = Field(default="CLOUDFLARE_API_TOKEN", pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the API token (never the token)."""
    zone_id: str | None = Field(default=None, min_length=1)
    """The zone holding the records; null: found by name (needs Zone.Zone:Read)."""
    api_base: str = Field(default="https://api.cloudflare.com/client/v4", pattern=r"^https?://")
    """Base URL of the API; change it only for a proxy or a test server."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the API's TLS; a relative path is relative to the desired-state directory."""


Config = CloudflareConfig


def create(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01.cloudflare import CloudflareProvider
    from certreconcile.plugins.paths import optional_declared_path

    assert isinstance(spec.config, CloudflareConfig)
    ca_bundle = optional_declared_path(spec.config.ca_bundle, context.desired_dir)
    return CloudflareProvider(
        spec.name, spec.config, env=context.env, propagation=propagation_waiter(spec), ca_bundle=ca_bundle
    )

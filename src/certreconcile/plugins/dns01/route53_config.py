"""The ``route53`` DNS-01 provider kind: its configuration and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Wire,
)
from certreconcile.plugins.dns01 import propagation_waiter

if TYPE_CHECKING:
    from certreconcile.desired.model import PluginSpec
    from certreconcile.plugins.ports import Dns01Provider
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'AWS Route 53.'

class Route53Config(Wire):
    """DNS-01 through AWS Route 53 (``ChangeResourceRecordSets``), waiting for each change to be INSYNC.

    Credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``,
    instance roles), never from this file. Needs route53:ListHostedZonesByName (without
    hosted_zone_id), route53:ListResourceRecordSets, route53:ChangeResourceRecordSets, route53:GetChange.
    """

    hosted_zone_id: str | None = Field(default=None, min_length=1)
    """The hosted zone holding the records (e.g. Z0123456789ABC); null: the closest public zone by name."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region of the API client; default: ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another Route 53 endpoint (a test server); default: AWS's own."""


Config = Route53Config


def create(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    """INSYNC is the wait; the authoritative servers are asked too only when ``nameservers`` is declared."""
    from certreconcile.plugins.dns01 import propagation_settings
    from certreconcile.plugins.dns01.route53 import Route53Provider

    assert isinstance(spec.config, Route53Config)
    timeout, nameservers = propagation_settings(spec)
    propagation = propagation_waiter(spec).wait if nameservers is not None else None
    return Route53Provider(spec.name, spec.config, env=context.env, propagation=propagation, max_timeout=timeout)

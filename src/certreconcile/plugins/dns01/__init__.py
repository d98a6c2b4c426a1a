"""DNS-01 providers: factories of the built-in kinds (``rfc2136``, ``route53``, ``cloudflare``).

Importing this package imports no SDK: each factory imports its module (dnspython, boto3 at
first use, httpx) only when that kind is built. Every factory receives the provider's
:class:`~certreconcile.desired.model.DnsProviderSpec` (its ``propagation_timeout`` and
``nameservers``) and does no I/O: secrets are read and servers contacted at the first record.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from certreconcile.desired.documents import CloudflareConfig, Rfc2136Config, Route53Config
from certreconcile.desired.model import DEFAULT_PROPAGATION_TIMEOUT, DnsProviderSpec, PluginSpec
from certreconcile.plugins.paths import optional_declared_path
from certreconcile.plugins.ports import Dns01Provider

if TYPE_CHECKING:
    from certreconcile.plugins.dns01.propagation import PropagationWaiter
    from certreconcile.plugins.registry import PluginContext

__all__ = ["create_cloudflare_provider", "create_rfc2136_provider", "create_route53_provider"]


def _propagation_settings(spec: PluginSpec) -> tuple[timedelta, tuple[str, ...] | None]:
    if isinstance(spec, DnsProviderSpec):
        return spec.propagation_timeout, spec.nameservers
    return DEFAULT_PROPAGATION_TIMEOUT, None


def _waiter(spec: PluginSpec) -> PropagationWaiter:
    from certreconcile.plugins.dns01.propagation import PropagationWaiter

    timeout, nameservers = _propagation_settings(spec)
    return PropagationWaiter(nameservers, timeout)


def create_rfc2136_provider(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01.rfc2136 import Rfc2136Provider

    assert isinstance(spec.config, Rfc2136Config)
    return Rfc2136Provider(spec.name, spec.config, env=context.env, propagation=_waiter(spec))


def create_route53_provider(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    """INSYNC is the wait; the authoritative servers are asked too only when ``nameservers`` is declared."""
    from certreconcile.plugins.dns01.route53 import Route53Provider

    assert isinstance(spec.config, Route53Config)
    timeout, nameservers = _propagation_settings(spec)
    propagation = _waiter(spec).wait if nameservers is not None else None
    return Route53Provider(
        spec.name, spec.config, env=context.env, propagation=propagation, max_timeout=timeout
    )


def create_cloudflare_provider(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01.cloudflare import CloudflareProvider

    assert isinstance(spec.config, CloudflareConfig)
    ca_bundle = optional_declared_path(spec.config.ca_bundle, context.desired_dir)
    return CloudflareProvider(
        spec.name, spec.config, env=context.env, propagation=_waiter(spec), ca_bundle=ca_bundle
    )

"""DNS-01 providers: what every kind shares (the propagation wait).

The kinds (``rfc2136``, ``route53``, ``cloudflare``) are the ``*_config`` modules next to this
one, each exporting its ``Config`` and its factory. Importing this package imports no SDK: each
factory imports its module (dnspython, boto3 at first use, httpx) only when that kind is built.
Every factory receives the provider's :class:`~certreconcile.desired.model.DnsProviderSpec` (its
``propagation_timeout`` and ``nameservers``) and does no I/O: secrets are read and servers
contacted at the first record.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from certreconcile.desired.model import DEFAULT_PROPAGATION_TIMEOUT, DnsProviderSpec, PluginSpec

if TYPE_CHECKING:
    from certreconcile.plugins.dns01.propagation import PropagationWaiter

__all__ = ["propagation_settings", "propagation_waiter"]


def propagation_settings(spec: PluginSpec) -> tuple[timedelta, tuple[str, ...] | None]:
    if isinstance(spec, DnsProviderSpec):
        return spec.propagation_timeout, spec.nameservers
    return DEFAULT_PROPAGATION_TIMEOUT, None


def propagation_waiter(spec: PluginSpec) -> PropagationWaiter:
    from certreconcile.plugins.dns01.propagation import PropagationWaiter

    timeout, nameservers = propagation_settings(spec)
    return PropagationWaiter(nameservers, timeout)

"""Plug-ins chosen by name from the ``certreconcile.{kms,issuers,targets,dns01}`` entry-point groups.

Each entry point names a kind module (:mod:`certreconcile.desired.kinds`): its ``Config`` is
validated with the desired state, its ``create`` builds the adapter here. certreconcile's own
kinds are registered the same way (pyproject.toml), so a kind installed from another package
is a kind like any other. Kind modules import no SDK: the factory imports the adapter, so an
SDK that one plug-in needs is never loaded by a command that does not use it (``plan`` never
imports boto3).

Optional hooks of a kind module, looked up by name: ``SUMMARY`` (all); ``USES_CHALLENGES``,
``KEY_TYPES``, ``certificate_lifetime(config)`` and ``config_findings(config)`` (issuers,
read by validation); ``declared_key_id(config, context)`` (KMS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from certreconcile.actual.store import StateStore
from certreconcile.desired.kinds import kind_module, kind_names
from certreconcile.desired.model import DnsProviderSpec, IssuerSpec, KmsSpec, PluginSpec
from certreconcile.plugins.context import PluginContext, create_target
from certreconcile.plugins.ports import Dns01Provider, Issuer, Kms

__all__ = [
    "PluginContext",
    "available_kinds",
    "create_dns_provider",
    "create_issuer",
    "create_kms",
    "create_target",
    "declared_key_id",
]


def available_kinds(group: str) -> frozenset[str]:
    return frozenset(kind_names(group))


def _load(group: str, kind: str) -> Callable[..., Any]:
    return cast(Callable[..., Any], kind_module(group, kind).create)


def declared_key_id(spec: KmsSpec, context: PluginContext) -> str | None:
    """The master key id the envelopes of this KMS record, when its kind knows it without a KMS call.

    A KMS kind module may export ``declared_key_id(config, context) -> str | None``.
    """
    hook = getattr(kind_module("kms", spec.kind), "declared_key_id", None)
    return cast(str | None, hook(spec.config, context)) if callable(hook) else None


def create_kms(spec: KmsSpec, context: PluginContext) -> Kms:
    kms = cast(Kms, _load("kms", spec.kind)(spec, context))
    if spec.cache is not None:  # off unless declared: kms: {..., cache: {max_age, max_uses}}
        from certreconcile.plugins.kms.cache import CachingKms

        kms = CachingKms(kms, max_age=spec.cache.max_age, max_uses=spec.cache.max_uses, max_size=spec.cache.max_size)
    return kms


def create_issuer(spec: IssuerSpec, context: PluginContext, store: StateStore, kms: Kms) -> Issuer:
    return cast(Issuer, _load("issuers", spec.kind)(spec, context, store, kms))


def create_dns_provider(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    """The declared provider; unless ``follow_cname: false``, wrapped to publish at the end of the
    CNAME chain of each ``_acme-challenge`` name (:mod:`certreconcile.plugins.dns01.cname`)."""
    provider = cast(Dns01Provider, _load("dns01", spec.kind)(spec, context))
    if isinstance(spec, DnsProviderSpec) and spec.follow_cname:
        from certreconcile.plugins.dns01.cname import CnameFollowingProvider, CnameResolver

        resolver = CnameResolver(spec.resolvers if spec.resolvers is not None else spec.nameservers)
        provider = CnameFollowingProvider(provider, resolver.follow)
    return provider

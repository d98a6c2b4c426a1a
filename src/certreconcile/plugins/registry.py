"""Plug-ins chosen by name: built-ins plus the ``certreconcile.*`` entry-point groups.

Nothing is imported until a kind is asked for, so an SDK that one plug-in needs is never
loaded by a command that does not use it (``plan`` never imports boto3).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, cast

from certreconcile.actual.store import StateStore
from certreconcile.desired.model import IssuerSpec, KmsSpec, PluginSpec, TargetSpec
from certreconcile.errors import ConfigError
from certreconcile.plugins.ports import Dns01Provider, Issuer, Kms, Target

__all__ = ["PluginContext", "available_kinds", "create_dns_provider", "create_issuer", "create_kms", "create_target"]


@dataclass(frozen=True, slots=True)
class PluginContext:
    desired_dir: Path  # relative paths in declarations are relative to this
    data_dir: Path  # CERTRECONCILE_DATA_DIR
    env: Mapping[str, str]
    # The declared DNS-01 providers, built before the issuers that use them.
    dns_providers: Mapping[str, Dns01Provider] = field(default_factory=dict)


_BUILTIN: dict[str, dict[str, str]] = {
    "kms": {
        "local": "certreconcile.plugins.factories:create_local_kms",
        "aws": "certreconcile.plugins.factories:create_aws_kms",
        "vault": "certreconcile.plugins.factories:create_vault_kms",
        "gcp": "certreconcile.plugins.factories:create_gcp_kms",
    },
    "issuers": {
        "local_ca": "certreconcile.plugins.factories:create_local_ca",
        "acme": "certreconcile.plugins.factories:create_acme_issuer",
        "vault_pki": "certreconcile.plugins.factories:create_vault_pki",
    },
    "targets": {
        "files": "certreconcile.plugins.factories:create_files_target",
        "caddy": "certreconcile.plugins.factories:create_caddy_target",
        "envoy": "certreconcile.plugins.factories:create_envoy_target",
        "traefik": "certreconcile.plugins.factories:create_traefik_target",
        "webhook": "certreconcile.plugins.factories:create_webhook_target",
        "aws_acm": "certreconcile.plugins.factories:create_aws_acm_target",
        "nginx": "certreconcile.plugins.factories:create_nginx_target",
        "haproxy": "certreconcile.plugins.factories:create_haproxy_target",
    },
    "dns01": {
        "rfc2136": "certreconcile.plugins.dns01:create_rfc2136_provider",
        "route53": "certreconcile.plugins.dns01:create_route53_provider",
        "cloudflare": "certreconcile.plugins.dns01:create_cloudflare_provider",
    },
}


def _factories(group: str) -> dict[str, str]:
    found = dict(_BUILTIN[group])
    for entry in entry_points(group=f"certreconcile.{group}.factories"):
        found.setdefault(entry.name, entry.value)
    return found


def available_kinds(group: str) -> frozenset[str]:
    return frozenset(_factories(group))


def _load(group: str, kind: str) -> Callable[..., Any]:
    factories = _factories(group)
    if kind not in factories:
        raise ConfigError(
            f"no {group} plug-in named {kind!r} is installed",
            code="plugin-unknown",
            hint="available: " + ", ".join(sorted(factories)),
        )
    module_name, _, attribute = factories[kind].partition(":")
    return cast(Callable[..., Any], getattr(importlib.import_module(module_name), attribute))


def create_kms(spec: KmsSpec, context: PluginContext) -> Kms:
    kms = cast(Kms, _load("kms", spec.kind)(spec, context))
    if spec.cache is not None:  # off unless declared: kms: {..., cache: {max_age, max_uses}}
        from certreconcile.plugins.kms.cache import CachingKms

        kms = CachingKms(kms, max_age=spec.cache.max_age, max_uses=spec.cache.max_uses, max_size=spec.cache.max_size)
    return kms


def create_issuer(spec: IssuerSpec, context: PluginContext, store: StateStore, kms: Kms) -> Issuer:
    return cast(Issuer, _load("issuers", spec.kind)(spec, context, store, kms))


def create_target(spec: TargetSpec, context: PluginContext) -> Target:
    return cast(Target, _load("targets", spec.kind)(spec, context))


def create_dns_provider(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    return cast(Dns01Provider, _load("dns01", spec.kind)(spec, context))

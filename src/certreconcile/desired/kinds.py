"""The plugin kinds installed: entry points of the groups ``certreconcile.{kms,issuers,targets,dns01}``.

Each entry point names a *kind module* (``nginx = "certreconcile.plugins.targets.nginx_config"``)
which exports:

- ``Config``: the kind's pydantic configuration model (extra keys forbidden; build it on
  :class:`certreconcile.desired.fields.Wire` to share the patterns and value checks);
- ``create``: the factory, ``create(spec, context)`` (issuers: ``create(spec, context, store, kms)``),
  which imports the adapter and its SDK only when called;
- optionally ``SUMMARY``, the one-line description of the kind key in the JSON Schema, and the
  hooks documented in :mod:`certreconcile.plugins.registry`.

certreconcile's own kinds are found the same way, from its own package metadata: there is no
second list. A kind module must be cheap to import (no SDK at module level): validation imports
the modules of every installed kind to build the desired-state models.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import distributions
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from certreconcile.domain.keys import KeyType
from certreconcile.errors import ConfigError

__all__ = [
    "GROUPS",
    "config_class",
    "issuer_hook",
    "key_types",
    "kind_module",
    "kind_names",
    "summary",
    "uses_challenges",
]

#: Plugin group → the section of the desired state holding its entries.
GROUPS: dict[str, str] = {"kms": "kms", "issuers": "issuers", "targets": "targets", "dns01": "dns_providers"}


#: The distribution whose kinds are the built-in ones (the committed JSON Schema holds only these).
_OWN_DISTRIBUTION = "certreconcile"


@cache
def _all_registered() -> dict[str, dict[str, tuple[str, bool]]]:
    """group → kind → (module, built in?): every entry point of the four groups, in one scan of the
    installed distributions (each scan reads every distribution's metadata)."""
    found: dict[str, dict[str, tuple[str, bool]]] = {group: {} for group in GROUPS}
    prefix = "certreconcile."
    seen: set[str] = set()
    for dist in distributions():  # first on sys.path wins, as in importlib.metadata.entry_points()
        text = dist.read_text("entry_points.txt") or ""
        if "[certreconcile." not in text:
            continue  # cheap: parsing every distribution's METADATA for its name would cost ~100 ms
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for entry in dist.entry_points:
            group = entry.group.removeprefix(prefix)
            if entry.group.startswith(prefix) and group in found:
                found[group].setdefault(entry.name, (entry.value, name == _OWN_DISTRIBUTION))
    return found


def _registered(group: str) -> dict[str, tuple[str, bool]]:
    """kind → (module, built in?) of every entry point of the group."""
    return _all_registered()[group]


def _entry_points(group: str) -> dict[str, str]:
    return {kind: module for kind, (module, _) in _registered(group).items()}


def kind_names(group: str, *, builtin_only: bool = False) -> tuple[str, ...]:
    """The installed kinds of ``group``, sorted by name; ``builtin_only``: certreconcile's own."""
    return tuple(sorted(kind for kind, (_, builtin) in _registered(group).items() if builtin or not builtin_only))


@cache
def kind_module(group: str, kind: str) -> ModuleType:
    """The kind module; ConfigError when no such kind is installed or its module cannot be imported."""
    found = _entry_points(group)
    if kind not in found:
        raise ConfigError(
            f"no {group} plug-in named {kind!r} is installed",
            code="plugin-unknown",
            hint="available: " + ", ".join(sorted(found)),
        )
    module_name = found[kind]
    try:
        module = importlib.import_module(module_name.partition(":")[0])
    except ImportError as exc:
        raise ConfigError(
            f"the {group} plug-in {kind!r} cannot be loaded from {module_name}: {exc}",
            code="plugin-broken",
            hint="reinstall the package providing it, or uninstall it",
        ) from exc
    config = getattr(module, "Config", None)
    valid_config = isinstance(config, type) and issubclass(config, BaseModel)
    if not valid_config or not callable(getattr(module, "create", None)):
        raise ConfigError(
            f"the {group} plug-in {kind!r} ({module_name}) does not export a pydantic `Config` and a `create` factory",
            code="plugin-broken",
            hint="a kind module exports Config (a pydantic model) and create (its factory)",
        )
    return module


def config_class(group: str, kind: str) -> type[BaseModel]:
    config: type[BaseModel] = kind_module(group, kind).Config
    return config


def summary(group: str, kind: str) -> str:
    """The kind key's description: the module's ``SUMMARY``, else the first line of its Config's docstring."""
    module = kind_module(group, kind)
    text = getattr(module, "SUMMARY", None) or (module.Config.__doc__ or kind).strip().splitlines()[0]
    return str(text)


def issuer_hook(kind: str, name: str) -> Any:
    """A validation hook of an issuer kind's module (see certreconcile.plugins.registry), or None."""
    return getattr(kind_module("issuers", kind), name, None)


@cache  # asked once per certificate; the kind modules are cached (kind_module) so this is too
def uses_challenges(kind: str) -> bool:
    """Kinds that validate names with ACME challenges (``USES_CHALLENGES``): their default challenge
    is http-01. Other kinds accept and ignore a certificate's ``challenge``."""
    return bool(issuer_hook(kind, "USES_CHALLENGES"))


@cache
def key_types(kind: str) -> frozenset[KeyType] | None:
    """The key types a kind can sign (``KEY_TYPES``); None: every KeyType."""
    supported = issuer_hook(kind, "KEY_TYPES")
    return frozenset(supported) if supported is not None else None

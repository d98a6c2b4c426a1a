"""Stage (1): load and validate the desired state.

    load_desired(directory, ref=None) -> DesiredState      raises DesiredStateError(diagnostics)
    validate_directory(directory, ref=None) -> list[Diagnostic]

A directory of ``*.yaml`` files (working tree, or the tree of a git ref) is parsed,
validated as a whole and turned into a frozen :class:`DesiredState`. No I/O happens
at import time.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

from pydantic import BaseModel

from certreconcile.desired.agent_refs import agent_specs, agent_target_specs, is_agent_reference
from certreconcile.desired.documents import KmsCacheConfig
from certreconcile.desired.kinds import config_class
from certreconcile.desired.loader import Sources, read_sources
from certreconcile.desired.model import (
    DEFAULT_PROPAGATION_TIMEOUT,
    DEFAULT_VERIFY_TIMEOUT,
    AgentSpec,
    CertificateSpec,
    DesiredState,
    DnsProviderSpec,
    IssuerSpec,
    KmsCacheSpec,
    KmsSpec,
    PluginSpec,
    SourceLocation,
    TargetSpec,
)
from certreconcile.desired.notify_refs import notify_spec
from certreconcile.desired.schema import desired_state_json_schema, render_json_schema
from certreconcile.desired.validate import (
    Declarations,
    DeclaredPlugin,
    Diagnostic,
    NodeRef,
    validate_sources,
)
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.records import slot_constructor
from certreconcile.errors import DesiredStateError

__all__ = [
    "DesiredCache",
    "Diagnostic",
    "desired_state_json_schema",
    "load_desired",
    "plugin_fingerprint",
    "render_json_schema",
    "validate_directory",
]


def validate_directory(directory: Path, ref: str | None = None) -> list[Diagnostic]:
    """Every diagnostic of the declarations in ``directory`` (at ``ref``), sorted; empty when valid.

    Raises :class:`~certreconcile.errors.ConfigError` when the directory or ref cannot be read.
    """
    sources = read_sources(directory, ref)
    _, diagnostics, _ = validate_sources(sources.files, directory=directory)
    return diagnostics


def load_desired(directory: Path, ref: str | None = None, *, with_locations: bool = False) -> DesiredState:
    """Load, validate and freeze the desired state of ``directory``.

    ``ref`` reads the files from that git commit instead of the working tree and records
    the commit and its author. ``with_locations`` fills ``location`` on every spec; it
    composes each file with PyYAML (about 1 s per 10,000 certificates), so it is off by
    default and ``location`` is then ``None``.

    Raises :class:`DesiredStateError` carrying every :class:`Diagnostic`, sorted by position.
    """
    return load_sources(read_sources(directory, ref), directory, with_locations=with_locations)


class DesiredCache:
    """Loads like :func:`load_desired`, but reuses the last desired state while every file read is byte for
    byte the same (and, at a ref, the commit too): ``run`` re-reads the files each cycle, and validates only
    when one changed. Checks that look beyond the files (a target directory inside the Git repository) run
    again only then."""

    def __init__(self) -> None:
        self._last: tuple[Sources, DesiredState] | None = None

    def load(self, directory: Path, ref: str | None = None) -> DesiredState:
        sources = read_sources(directory, ref)
        if self._last is not None and self._last[0] == sources:
            return self._last[1]
        desired = load_sources(sources, directory)
        self._last = (sources, desired)
        return desired


def load_sources(sources: Sources, directory: Path, *, with_locations: bool = False) -> DesiredState:
    """:func:`load_desired` of files already read (``directory``: where they were read from)."""
    with _collector_paused():
        declarations, diagnostics, located = validate_sources(
            sources.files, with_locations=with_locations, directory=directory
        )
    if diagnostics:
        raise DesiredStateError(list(diagnostics), f"the desired state has {len(diagnostics)} error(s)")
    origin = sources.origin
    with _collector_paused():
        return _build(declarations, located, origin.commit if origin else None, origin.author_email if origin else None)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    At 10,000 certificates the collector's generation scans took half the load time.
    Reference counting still frees everything; the previous setting is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------- building the frozen model


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def kms_cache_spec(config: KmsCacheConfig | None) -> KmsCacheSpec | None:
    if config is None:
        return None
    return KmsCacheSpec(config.max_age.delta, config.max_uses, config.max_size)


def plugin_fingerprint(kind: str, config: BaseModel) -> str:
    """SHA-256 of the canonical JSON of ``{kind, config}`` (defaults included, key order irrelevant)."""
    payload = {"kind": kind, "config": config.model_dump(mode="json")}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


_CERTIFICATE_FIELDS = (
    "domains",
    "issuer",
    "key_type",
    "renew_before_seconds",
    "renew_before_fraction",
    "targets",
    "on_delete",
    "challenge",
    "dns_provider",
)


def _cname_json(spec: DnsProviderSpec) -> dict[str, object]:
    """The CNAME settings in the canonical form, only when not the defaults (older digests stay valid)."""
    found: dict[str, object] = {}
    if not spec.follow_cname:
        found["follow_cname"] = False
    if spec.resolvers is not None:
        found["resolvers"] = list(spec.resolvers)
    return found


def _renew_before_json(renew_before: RenewBefore) -> tuple[float | None, float | None]:
    seconds = renew_before.duration.total_seconds() if renew_before.duration is not None else None
    return seconds, renew_before.fraction


def _build(
    declarations: Declarations,
    located: dict[NodeRef, SourceLocation],
    git_commit: str | None,
    git_author_email: str | None,
) -> DesiredState:
    plugins = _plugin_specs(declarations, located)
    kms, issuers, dns_providers, targets = plugins
    certificates = _certificate_specs(declarations, located)
    agents = agent_specs(declarations.agents, located)
    references = (target for spec in certificates.values() for target in spec.targets if is_agent_reference(target))
    targets.update(agent_target_specs(references, agents))
    targets = dict(sorted(targets.items()))
    plugins = (kms, issuers, dns_providers, targets)
    digest = _digest(plugins, declarations.allowed_domains, certificates, agents)
    return DesiredState(
        kms=kms,
        issuers=MappingProxyType(issuers),
        dns_providers=MappingProxyType(dns_providers),
        targets=MappingProxyType(targets),
        allowed_domains=declarations.allowed_domains,
        certificates=MappingProxyType(certificates),
        digest=digest,
        git_commit=git_commit,
        git_author_email=git_author_email,
        agents=MappingProxyType(agents),
        notify=notify_spec(declarations.notify, declarations.notify_ref, located),
    )


_PluginSpecs = tuple[KmsSpec, dict[str, IssuerSpec], dict[str, DnsProviderSpec], dict[str, TargetSpec]]


def _plugin_specs(declarations: Declarations, located: dict[NodeRef, SourceLocation]) -> _PluginSpecs:
    """The KMS, issuer, DNS provider and target specs, each with its config's fingerprint and location."""

    def spec_args(plugin: DeclaredPlugin) -> dict[str, object]:
        return {
            "name": plugin.name,
            "kind": plugin.kind,
            "config": plugin.config,
            "fingerprint": plugin_fingerprint(plugin.kind, plugin.config),
            "location": located.get(plugin.ref),
        }

    if declarations.kms is not None:
        kms = KmsSpec(**spec_args(declarations.kms), cache=kms_cache_spec(declarations.kms_cache))  # type: ignore[arg-type]
    else:  # the default: {local: {}}
        config = config_class("kms", "local")()
        kms = KmsSpec("local", "local", config, plugin_fingerprint("local", config))
    issuers = {
        name: IssuerSpec(**spec_args(p))  # type: ignore[arg-type]
        for name, p in sorted(declarations.issuers.items())
    }
    dns_providers = {
        name: DnsProviderSpec(
            **spec_args(p),  # type: ignore[arg-type]
            propagation_timeout=p.propagation_timeout or DEFAULT_PROPAGATION_TIMEOUT,
            nameservers=p.nameservers,
            follow_cname=p.follow_cname,
            resolvers=p.resolvers,
        )
        for name, p in sorted(declarations.dns_providers.items())
    }
    targets = {
        name: TargetSpec(
            **spec_args(p),  # type: ignore[arg-type]
            verify=p.verify,
            sni=p.sni,
            verify_timeout=p.verify_timeout or DEFAULT_VERIFY_TIMEOUT,
        )
        for name, p in sorted(declarations.targets.items())
    }
    return kms, issuers, dns_providers, targets


_new_certificate_spec = slot_constructor(CertificateSpec)


def _certificate_specs(
    declarations: Declarations, located: dict[NodeRef, SourceLocation]
) -> dict[str, CertificateSpec]:
    certificates: dict[str, CertificateSpec] = {}
    declared_by_name = declarations.certificates
    new_spec = _new_certificate_spec
    for name in sorted(declared_by_name):  # the names alone: sorting (name, declared) pairs costs twice as much
        document, domains, renew_before, ref = declared_by_name[name]
        targets = document.targets
        # CertificateSpec's fields in order: name, domains, issuer, key_type, renew_before, targets,
        # on_delete, challenge, dns_provider, location
        certificates[name] = new_spec(
            name,
            domains,
            document.issuer,
            document.key,
            renew_before,
            tuple(sorted(set(targets))) if len(targets) > 1 else targets,
            document.on_delete,
            document.challenge,
            document.dns_provider,
            located.get(ref) if located else None,
        )
    return certificates


def _digest(
    plugins: _PluginSpecs,
    allowed_domains: tuple[str, ...],
    certificates: dict[str, CertificateSpec],
    agents: dict[str, AgentSpec],
) -> str:
    """The digest of the canonical form of a desired state (what a saved plan was made for)."""
    kms, issuers, dns_providers, targets = plugins

    def plugin_json(spec: PluginSpec) -> dict[str, object]:
        return {"kind": spec.kind, "config": spec.config.model_dump(mode="json")}

    # The canonical form: mappings keyed by name (sorted on dump), each certificate a fixed-order
    # list (StrEnum members dump as their values). Changing this layout changes every digest.
    canonical = {
        "kms": plugin_json(kms),
        "issuers": {name: plugin_json(spec) for name, spec in issuers.items()},
        "dns_providers": {
            name: {
                **plugin_json(spec),
                "propagation_timeout": spec.propagation_timeout.total_seconds(),
                "nameservers": list(spec.nameservers) if spec.nameservers is not None else None,
                **_cname_json(spec),
            }
            for name, spec in dns_providers.items()
        },
        "targets": {name: {**plugin_json(spec), "verify": spec.verify} for name, spec in targets.items()},
        "allowed_domains": list(allowed_domains),
        "certificate_fields": list(_CERTIFICATE_FIELDS),
        "certificates": {
            name: [
                spec.domains,
                spec.issuer,
                spec.key_type,
                *_renew_before_json(spec.renew_before),
                spec.targets,
                spec.on_delete,
                spec.challenge,
                spec.dns_provider,
            ]
            for name, spec in certificates.items()
        },
    }
    if agents:  # absent without agents: the digests of declarations without them stay what they were
        canonical["agents"] = {
            name: {"url": spec.url, "timeout": spec.timeout.total_seconds()} for name, spec in agents.items()
        }
    return hashlib.sha256(_canonical(canonical).encode()).hexdigest()

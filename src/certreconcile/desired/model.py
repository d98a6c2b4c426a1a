"""The validated desired state: frozen, keyed by name, free of pydantic.

Past :func:`certreconcile.desired.load_desired`, nothing reads YAML or dicts: every
stage receives these dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel

from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.keys import KeyType
from certreconcile.domain.policy import Challenge, OnDelete

__all__ = [
    "AGENT_TARGET_KIND",
    "DEFAULT_AGENT_TIMEOUT",
    "DEFAULT_PROPAGATION_TIMEOUT",
    "DEFAULT_VERIFY_TIMEOUT",
    "NOTIFY_EVENTS",
    "AgentSpec",
    "AgentTargetRef",
    "CertificateSpec",
    "Challenge",
    "DesiredState",
    "DnsProviderSpec",
    "IssuerSpec",
    "KmsCacheSpec",
    "KmsSpec",
    "NotifySinkSpec",
    "NotifySpec",
    "OnDelete",
    "PluginSpec",
    "SourceLocation",
    "TargetSpec",
]


@dataclass(frozen=True, slots=True, order=True)
class SourceLocation:
    file: str  # path relative to the desired-state directory
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """One configured plugin instance (an issuer, a target, a DNS provider, the KMS).

    ``kind`` is the registry name (``local_ca``, ``files``...); ``config`` is the
    plugin's own validated pydantic model; ``fingerprint`` is a digest of the canonical
    JSON of ``kind`` and ``config`` (a changed fingerprint means a changed declaration).
    """

    name: str
    kind: str
    config: BaseModel
    fingerprint: str
    location: SourceLocation | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class KmsCacheSpec:
    """Bounds of the in-memory cache of unwrapped data keys."""

    max_age: timedelta
    max_uses: int
    max_size: int


@dataclass(frozen=True, slots=True)
class KmsSpec(PluginSpec):
    cache: KmsCacheSpec | None = None  # None: every unwrap asks the KMS


@dataclass(frozen=True, slots=True)
class IssuerSpec(PluginSpec):
    pass


#: How long a DNS provider waits for the authoritative name servers unless declared otherwise.
DEFAULT_PROPAGATION_TIMEOUT = timedelta(seconds=120)
DEFAULT_VERIFY_TIMEOUT = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class DnsProviderSpec(PluginSpec):
    propagation_timeout: timedelta = DEFAULT_PROPAGATION_TIMEOUT  # upper bound of the wait before validation
    nameservers: tuple[str, ...] | None = None  # HOST:PORT to check; None: the zone's NS records on port 53
    # Follow the CNAME chain of ``_acme-challenge.<name>`` and publish at its end (lego's default).
    follow_cname: bool = True
    # HOST:PORT asked to follow that chain; None: the nameservers when declared, else the system resolver.
    resolvers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class TargetSpec(PluginSpec):
    verify: str | None = None  # HOST:PORT to verify by TLS handshake, if any
    sni: str | None = None  # the server name for every verification handshake; None: each certificate name
    verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT


#: The kind of the target specs the loader makes for ``agent/target`` references. Never declared
#: in ``targets:``: the wiring builds these targets itself (``certreconcile.fleet``).
AGENT_TARGET_KIND = "agent"
DEFAULT_AGENT_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent of ``agents:`` (design.md section 9): where the applier reaches it."""

    name: str
    url: str  # https://HOST:PORT
    timeout: timedelta = DEFAULT_AGENT_TIMEOUT  # one request, the agent's local verification included
    location: SourceLocation | None = field(default=None, compare=False)


class AgentTargetRef(BaseModel):
    """The ``config`` of a ``TargetSpec`` of kind ``agent``: the local target ``target`` of agent ``agent``.

    The spec's name is ``<agent>/<target>``; its fingerprint changes with the agent's URL and timeout.
    """

    model_config = {"extra": "forbid", "frozen": True}

    agent: str
    target: str
    url: str
    timeout_seconds: float


#: Every notification event, in the order the README lists them.
NOTIFY_EVENTS = ("issued", "renewed", "failed", "verification_failed", "expiring", "agent_unreachable")
DEFAULT_EXPIRING_WITHIN = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class NotifySinkSpec(PluginSpec):
    """One sink of ``notify:``: ``kind`` is webhook, email or apprise; ``config`` names secrets by ``*_env``."""

    events: frozenset[str] = frozenset(NOTIFY_EVENTS)


@dataclass(frozen=True, slots=True)
class NotifySpec:
    """The ``notify:`` section: the sinks by name, and when a certificate counts as ``expiring``."""

    sinks: Mapping[str, NotifySinkSpec]
    expiring_within: timedelta = DEFAULT_EXPIRING_WITHIN
    location: SourceLocation | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    name: str  # stable identity across rotations
    domains: tuple[str, ...]  # IDNA-normalised; the first is the primary name
    issuer: str
    key_type: KeyType
    renew_before: RenewBefore
    targets: tuple[str, ...]  # sorted, unique
    on_delete: OnDelete
    challenge: Challenge | None = None
    dns_provider: str | None = None
    location: SourceLocation | None = field(default=None, compare=False)

    @property
    def primary(self) -> str:
        return self.domains[0]

    @property
    def sans(self) -> tuple[str, ...]:
        return self.domains[1:]


@dataclass(frozen=True, slots=True)
class DesiredState:
    kms: KmsSpec
    issuers: Mapping[str, IssuerSpec]
    dns_providers: Mapping[str, PluginSpec]
    targets: Mapping[str, TargetSpec]
    allowed_domains: tuple[str, ...]  # normalised patterns; empty means any name
    certificates: Mapping[str, CertificateSpec]  # in name order
    digest: str  # SHA-256 over the canonical form of everything above
    git_commit: str | None = None  # the commit the declarations were read from, if any
    git_author_email: str | None = None
    agents: Mapping[str, AgentSpec] = field(default_factory=dict)  # ``agents:``, by name
    notify: NotifySpec | None = None  # ``notify:``; not in the digest (plans do not depend on it)

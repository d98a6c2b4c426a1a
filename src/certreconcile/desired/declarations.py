"""What validation produces: diagnostics, and the merged declarations of a directory's files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from pydantic import BaseModel

from certreconcile.desired.documents import CertificateDocument, KmsCacheConfig, NotifyDocument
from certreconcile.desired.loader import Anchor, PathElement
from certreconcile.desired.model import SourceLocation
from certreconcile.domain.durations import RenewBefore

__all__ = ["Declarations", "DeclaredAgent", "DeclaredCertificate", "DeclaredPlugin", "Diagnostic", "Issue", "NodeRef"]


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem in the declarations, shown as ``file:line:col: error[code]: message (hint)``."""

    location: SourceLocation
    code: str  # stable kebab-case
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.location}: error[{self.code}]: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class NodeRef(NamedTuple):
    """Where something was declared, as a path; turned into a position only when needed."""

    file: str
    path: tuple[PathElement, ...]
    anchor: Anchor = "value"

    def child(self, *elements: PathElement) -> NodeRef:
        return NodeRef(self.file, (*self.path, *elements))


@dataclass(frozen=True, slots=True)
class DeclaredPlugin:
    name: str
    kind: str
    config: BaseModel
    verify: str | None
    ref: NodeRef
    # DNS providers only: how long to wait for the authoritative servers, and which ones to ask.
    propagation_timeout: timedelta | None = None
    nameservers: tuple[str, ...] | None = None
    # Targets only: the server name for verification handshakes, and how long to retry them.
    sni: str | None = None
    verify_timeout: timedelta | None = None
    # DNS providers only: follow the CNAME of _acme-challenge names, through which servers.
    follow_cname: bool = True
    resolvers: tuple[str, ...] | None = None


class DeclaredAgent(NamedTuple):
    name: str
    url: str
    timeout: timedelta | None  # None: the default (DEFAULT_AGENT_TIMEOUT)
    ref: NodeRef


class DeclaredCertificate(NamedTuple):
    document: CertificateDocument
    domains: tuple[str, ...]  # normalised, order kept, duplicates removed
    renew_before: RenewBefore
    ref: NodeRef


@dataclass(slots=True)
class Declarations:
    """The merged declarations of all files; meaningful only when there are no diagnostics."""

    kms: DeclaredPlugin | None = None
    kms_cache: KmsCacheConfig | None = None
    issuers: dict[str, DeclaredPlugin] = field(default_factory=dict)
    dns_providers: dict[str, DeclaredPlugin] = field(default_factory=dict)
    targets: dict[str, DeclaredPlugin] = field(default_factory=dict)
    agents: dict[str, DeclaredAgent] = field(default_factory=dict)
    allowed_domains: tuple[str, ...] = ()
    certificates: dict[str, DeclaredCertificate] = field(default_factory=dict)
    policy_ref: NodeRef | None = None
    notify: NotifyDocument | None = None
    notify_ref: NodeRef | None = None


@dataclass(frozen=True, slots=True)
class Issue:
    ref: NodeRef
    code: str
    message: str  # may hold "{related}", replaced by the position of `related`
    hint: str = ""
    related: NodeRef | None = None

"""Wire models for ONE desired-state YAML file (pydantic v2).

These classes describe what a user may write, nothing more: every model forbids
unknown keys and is frozen. Cross-file rules (references, duplicates, policy) live
in :mod:`certreconcile.desired.validate`; past validation nothing outside
``desired/`` sees these classes.

Each plugin kind owns its configuration model (``Config`` in its kind module, found by
entry point: :mod:`certreconcile.desired.kinds`); the models that validate a file are built
from the installed kinds at first use (:func:`desired_document_model`), and so is the JSON
Schema. The classes below are their bases: the keys common to each section.

A plugin entry (the ``kms`` section, each issuer, target and DNS provider) is a
mapping with exactly ONE *kind* key (``local_ca``, ``files``...) whose value is that
kind's configuration, plus the keys common to its section (``verify`` for targets).
A kind key with an empty value (``local:``) means the kind's default configuration.
"""

from __future__ import annotations

from copy import copy
from functools import cache
from typing import Annotated, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from certreconcile.desired.fields import (
    DURATION_PATTERN,
    HOST_PORT_PATTERN,
    RENEW_BEFORE_PATTERN,
    Checked,
    Duration,
    HostPort,
    Name,
    ParsedDuration,
    Wire,
)
from certreconcile.desired.kinds import config_class, kind_names, summary
from certreconcile.desired.model import (
    Challenge,
    OnDelete,
)
from certreconcile.desired.notify_sinks import (
    AppriseSinkConfig,
    EmailSinkConfig,
    NotifyEventName,
    WebhookSinkConfig,
)
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import CERT_NAME_PATTERN

__all__ = [
    "AGENT_URL_PATTERN",
    "DURATION_PATTERN",
    "HOST_PORT_PATTERN",
    "RENEW_BEFORE_PATTERN",
    "AgentDocument",
    "CertificateDocument",
    "Checked",
    "DesiredDocument",
    "DnsProviderEntry",
    "IssuerEntry",
    "KmsCacheConfig",
    "KmsEntry",
    "NotifyDocument",
    "PluginEntry",
    "PolicyDocument",
    "SinkEntry",
    "TargetEntry",
    "desired_document_model",
    "entry_model",
]

# ---------------------------------------------------------------- plugin entries


class PluginEntry(Wire):
    """Base of a mapping holding exactly one kind key (plus the section's common keys)."""

    KINDS: ClassVar[tuple[str, ...]] = ()  # set on the models built by entry_model()
    GROUP: ClassVar[str] = ""  # the plugin group of desired.kinds
    SECTION: ClassVar[str] = "plugin"

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # the model's own type error reports it
        present = [kind for kind in cls.KINDS if kind in data]
        if len(present) > 1:
            raise PydanticCustomError(
                "plugin_kind_multiple",
                "this {section} entry has more than one kind key: {found}",
                {"section": cls.SECTION, "found": ", ".join(present)},
            )
        if not present:
            unknown = set(data) - set(cls.model_fields)
            if unknown:
                return data  # report the unknown key (a misspelt or unimplemented kind) instead
            raise PydanticCustomError(
                "plugin_kind_missing",
                "this {section} entry has no kind key; it needs exactly one of: {kinds}",
                {"section": cls.SECTION, "kinds": ", ".join(cls.KINDS)},
            )
        kind = present[0]
        if data[kind] is None:
            return {**data, kind: {}}
        return data

    def kind(self) -> tuple[str, BaseModel]:
        """The one kind key and its configuration."""
        for name in self.KINDS:
            config = getattr(self, name)
            if isinstance(config, BaseModel):
                return name, config
        raise AssertionError("validated plugin entry without a kind")  # pragma: no cover

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        definition = handler.resolve_ref_schema(json_schema)
        definition["oneOf"] = [{"required": [kind]} for kind in cls.KINDS]  # exactly one kind key
        return json_schema


class KmsCacheConfig(Wire):
    """A short-lived in-memory cache of unwrapped data keys (fewer KMS calls; off unless declared)."""

    max_age: Duration = ParsedDuration("5m")
    """How long an unwrapped data key may be reused."""
    max_uses: int = Field(default=100, ge=1)
    """How many times an unwrapped data key may be reused."""
    max_size: int = Field(default=1000, ge=1)
    """How many data keys the cache holds at most (the least recently used goes first)."""



class KmsEntry(PluginEntry):
    """The KMS wrapping every private key. Exactly one kind key."""

    SECTION: ClassVar[str] = "kms"
    GROUP: ClassVar[str] = "kms"

    cache: KmsCacheConfig | None = None
    """Cache unwrapped data keys in memory, bounded by age and uses; default: no cache."""


class IssuerEntry(PluginEntry):
    """One issuer instance. Exactly one kind key."""

    SECTION: ClassVar[str] = "issuer"
    GROUP: ClassVar[str] = "issuers"


class TargetEntry(PluginEntry):
    """One distribution target. Exactly one kind key, plus ``verify``."""

    SECTION: ClassVar[str] = "target"
    GROUP: ClassVar[str] = "targets"

    # The verification settings every target kind shares (the adapters receive them through
    # certreconcile.plugins.targets.verification); the default timeout is DEFAULT_VERIFY_TIMEOUT.
    verify: HostPort | None = None
    """HOST:PORT to verify by TLS handshake after deployment (SNI: each name of the certificate);
    null: the target's own read-back, if it has one."""
    sni: str | None = Field(default=None, min_length=1)
    """Server name to send in every verification handshake instead of the certificate's names."""
    verify_timeout: Duration = ParsedDuration("30s")  # DEFAULT_VERIFY_TIMEOUT
    """How long to retry verification (reloads are asynchronous) before the deployment counts as failed."""


class DnsProviderEntry(PluginEntry):
    """One DNS provider for DNS-01 challenges. Exactly one kind key, plus the propagation settings."""

    SECTION: ClassVar[str] = "dns provider"
    GROUP: ClassVar[str] = "dns01"

    propagation_timeout: Duration = ParsedDuration("120s")  # DEFAULT_PROPAGATION_TIMEOUT
    """How long to wait for every authoritative name server to answer a new TXT value."""
    nameservers: tuple[HostPort, ...] | None = None
    """HOST:PORT of the name servers to check; null: the zone's NS records, each on port 53
    (route53: null skips this check, the change being INSYNC is enough)."""
    follow_cname: bool = True
    """Follow the CNAME chain of ``_acme-challenge.<name>`` (a delegation to another zone or to an
    acme-dns server) and publish the TXT record at its end, as lego does; false: publish at
    ``_acme-challenge.<name>`` itself."""
    resolvers: tuple[HostPort, ...] | None = None
    """HOST:PORT of the servers asked to follow that CNAME chain (recursive resolvers, or servers
    authoritative for every zone of the chain); null: the nameservers when declared, else the
    system resolver."""


class SinkEntry(PluginEntry):
    """One notification sink. Exactly one kind key, plus the events it wants."""

    SECTION: ClassVar[str] = "notify sink"
    KINDS: ClassVar[tuple[str, ...]] = ("apprise", "email", "webhook")

    apprise: AppriseSinkConfig | None = None
    """Chat and push services through Apprise (the optional extra ``certreconcile[apprise]``)."""
    email: EmailSinkConfig | None = None
    """An e-mail through an SMTP server."""
    webhook: WebhookSinkConfig | None = None
    """An HTTP POST of JSON, signed per the Standard Webhooks specification."""
    events: tuple[NotifyEventName, ...] | None = None
    """The events to send here; default: every event."""


# ---------------------------------------------------------------- policy and certificates


class PolicyDocument(Wire):
    """Rules every certificate must satisfy."""

    allowed_domains: tuple[str, ...] = ()
    """Names (``example.com``) and wildcard patterns (``*.example.com``: any name below it); empty: any."""


class CertificateDocument(Wire):
    """One managed certificate."""

    name: Name
    """Stable identity across rotations."""
    domains: tuple[str, ...] = Field(min_length=1)
    """The first is the primary name, the rest are SANs; IDNA names are normalised."""
    issuer: str
    """Name of a declared issuer."""
    challenge: Challenge | None = None
    """ACME challenge type (ignored by issuers that do not use challenges); dns-01 needs dns_provider."""
    dns_provider: str | None = None
    """Name of a declared DNS provider, for dns-01."""
    key: KeyType = KeyType.ECDSA_P256
    """Private key type."""
    renew_before: Annotated[str, Field(pattern=RENEW_BEFORE_PATTERN)] | None = None
    """Renew this long before expiry (30d) or at this fraction of the lifetime left (33%);
    default min(30d, lifetime/3)."""
    targets: tuple[str, ...] = ()
    """Names of declared targets to deploy to, or ``AGENT/TARGET``: the local target TARGET of a
    declared agent (declared on the agent's host, never here)."""
    on_delete: OnDelete = OnDelete.RETIRE
    """What removing this declaration does: retire (stop managing) or revoke."""


#: ``https://HOST:PORT``, nothing after the port; the port's range is checked by the checker.
AGENT_URL_PATTERN = r"^https://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$"


class AgentDocument(Wire):
    """One agent (design.md section 9): a ``certreconcile agent`` on a server host, reached over mutual TLS."""

    url: Annotated[str, Field(pattern=AGENT_URL_PATTERN)]
    """Where the applier reaches the agent: https://HOST:PORT, e.g. https://web-1.internal:9443."""
    timeout: Duration | None = None
    """How long one request may take, the agent's local deployment and verification included; default 60s."""


# pydantic checks the pattern of dict keys but does not put it in the JSON Schema.
_NAMED_KEYS: dict[str, Any] = {"propertyNames": {"pattern": CERT_NAME_PATTERN}}


class NotifyDocument(Wire):
    """Notifications (``notify:``): where to send the events of issuance, failures and expiry."""

    expiring_within: Duration = ParsedDuration("14d")
    """Send ``expiring`` when a certificate expires within this time and no renewal has succeeded."""
    sinks: dict[Name, SinkEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Sinks by name: each a ``webhook``, ``email`` or ``apprise`` key, and the events it wants."""


class DesiredDocument(Wire):
    """One desired-state file. Every key is optional: the files of a directory are merged."""

    kms: KmsEntry | None = None
    """At most one file may declare it; default: ``{local: {}}``."""
    issuers: dict[Name, IssuerEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Issuer instances by name."""
    dns_providers: dict[Name, DnsProviderEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """DNS providers by name."""
    targets: dict[Name, TargetEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Targets by name."""
    agents: dict[Name, AgentDocument] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Agents by name: a certificate's targets may name ``AGENT/TARGET`` (a local target of the agent)."""
    policy: PolicyDocument | None = None
    """At most one file may declare it."""
    notify: NotifyDocument | None = None
    """Notifications; at most one file may declare it."""
    certificates: tuple[CertificateDocument, ...] = ()
    """Managed certificates; names are unique across all files."""


# ---------------------------------------------------------------- the models of the installed kinds


_Entry = TypeVar("_Entry", bound=PluginEntry)
_Model = TypeVar("_Model", bound=BaseModel)


def entry_model(base: type[_Entry], *, builtin_only: bool = False, kinds: frozenset[str] | None = None) -> type[_Entry]:
    """``base`` (KmsEntry, IssuerEntry...) with one optional field per installed kind of its group.

    The kinds come from the entry points (:mod:`certreconcile.desired.kinds`): a kind installed
    from another package validates and appears in the JSON Schema like a built-in one.
    ``kinds``: only those of the installed kinds (see :func:`desired_document_model`).
    """
    return cast(type[_Entry], _entry_model(base, builtin_only, kinds))


@cache
def _entry_model(base: type[PluginEntry], builtin_only: bool, only: frozenset[str] | None = None) -> type[PluginEntry]:
    kinds = kind_names(base.GROUP, builtin_only=builtin_only)
    if only is not None:
        kinds = tuple(kind for kind in kinds if kind in only)
    fields: dict[str, tuple[Any, Any]] = {
        kind: (config_class(base.GROUP, kind) | None, Field(default=None, description=summary(base.GROUP, kind)))
        for kind in kinds
    }
    model = _subclass(base, fields)
    model.KINDS = kinds
    return model


def _subclass(base: type[_Model], fields: dict[str, tuple[Any, Any]]) -> type[_Model]:
    """``base`` (same name and docstring) with ``fields`` added or replaced: ``name: (type, FieldInfo)``.

    Built like ``pydantic.create_model``, but without looking for attribute docstrings (there is no
    source to read: the descriptions are in the FieldInfo), which would cost ~20 ms per model.
    """
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "__annotations__": {name: annotation for name, (annotation, _) in fields.items()},
        "model_config": ConfigDict(use_attribute_docstrings=False),
        **{name: info for name, (_, info) in fields.items()},
    }
    metaclass: Any = type(base)  # pydantic's ModelMetaclass
    return cast(type[_Model], metaclass(base.__name__, (base,), namespace))


@cache
def desired_document_model(*, builtin_only: bool = False, kinds: frozenset[str] | None = None) -> type[DesiredDocument]:
    """:class:`DesiredDocument` whose plugin sections hold the installed kinds (:func:`entry_model`);
    ``builtin_only``: certreconcile's own kinds only (the committed JSON Schema).

    ``kinds``: only those of the installed kinds, the ones a set of documents uses. It validates those
    documents exactly as the complete model does (a kind key absent from a document is None either
    way) without importing every other kind's module (~60 ms for all of them); only its error
    messages differ (they list the kinds), so errors are worded by the complete model."""
    sections: dict[str, type[PluginEntry]] = {
        "kms": KmsEntry,
        "issuers": IssuerEntry,
        "dns_providers": DnsProviderEntry,
        "targets": TargetEntry,
    }
    fields: dict[str, tuple[Any, Any]] = {}
    for name, base in sections.items():
        info = copy(DesiredDocument.model_fields[name])
        entry = entry_model(base, builtin_only=builtin_only, kinds=kinds)
        annotation: Any = entry | None if name == "kms" else dict[Name, entry]  # type: ignore[valid-type]
        info.annotation = annotation
        fields[name] = (annotation, info)
    return _subclass(DesiredDocument, fields)

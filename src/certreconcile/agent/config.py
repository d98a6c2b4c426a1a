"""The agent's local configuration file (``agent.yaml``): who it is, where it listens, its TLS files, its targets.

::

    name: web-1                       # the agent's name: its certificate carries spiffe://certreconcile/agent/web-1
    listen: 127.0.0.1:9443            # HOST:PORT
    tls:
      key_file: tls/agent.key         # made on this host by `certreconcile agent csr` (0600); never leaves it
      cert_file: tls/agent.crt        # from `certreconcile agent enroll`; replaced on renewal
      ca_file: tls/fleet-ca.crt       # the fleet CA: the applier's certificate must chain to it
    request_window: 5m                # optional: how far a request's timestamp may be from this clock
    state_dir: state                  # optional: the plug-ins' data directory (default: agent-state/)
    targets:                          # the same kinds and keys as the central `targets:` section
      edge-nginx: {nginx: {cert_dir: /etc/nginx/certs, pid_file: /run/nginx.pid}, verify: 127.0.0.1:443}

The file is read with the desired state's strict YAML rules (:func:`certreconcile.desired.loader.parse_yaml`)
and every problem is reported at once, at ``file:line:column`` with a hint. Unknown keys are refused; a
database URL or a KMS section is refused by name, since the agent never holds either. Relative paths are
relative to the file's directory. Kinds that do not deploy on this host (``agent``, ``ssh``, ``aws_acm``)
are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from certreconcile.desired import plugin_fingerprint
from certreconcile.desired.checks import target_dir_findings, target_dirs, value_findings
from certreconcile.desired.declarations import Diagnostic
from certreconcile.desired.documents import TargetEntry, entry_model
from certreconcile.desired.fields import Duration, FsPath, HostPort, Name, Wire
from certreconcile.desired.loader import Anchor, PathElement, Positions, SourceFile, YamlError, parse_yaml
from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT, SourceLocation, TargetSpec
from certreconcile.desired.schema_errors import schema_issue
from certreconcile.errors import ConfigError
from certreconcile.fleet.protocol import DEFAULT_REQUEST_WINDOW

__all__ = [
    "DEFAULT_STATE_DIR",
    "REFUSED_KINDS",
    "AgentConfig",
    "AgentConfigError",
    "AgentTls",
    "load_agent_config",
]

DEFAULT_STATE_DIR = "agent-state"  # next to the configuration file
MAX_CONFIG_BYTES = 1 << 20

#: Target kinds an agent does not run, and why: it deploys on its own host, with no cloud credentials.
REFUSED_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "agent": "an agent deploys into its own local targets; it never forwards to another agent",
        "ssh": "an ssh target deploys to another host: declare it centrally, or run an agent on that host",
        "aws_acm": "aws_acm needs AWS credentials, which an agent never holds: declare it centrally",
    }
)
#: Top-level keys that name what the agent must never hold.
_SECRET_SETTINGS = frozenset({"database_url", "database", "kms", "kms_key_file", "dsn"})
FORBIDDEN_SETTING_CODE = "agent-config-forbidden-setting"
KIND_REFUSED_CODE = "agent-target-kind-refused"
_TOP_HINT = "allowed keys: name, listen, tls, request_window, state_dir, targets"


class AgentTlsDocument(Wire):
    """The agent's own TLS files."""

    key_file: FsPath = Field(min_length=1)
    """The agent's private key (0600), made on this host by ``certreconcile agent csr``."""
    cert_file: FsPath = Field(min_length=1)
    """The agent's certificate, signed by the fleet CA (``certreconcile agent enroll``)."""
    ca_file: FsPath = Field(min_length=1)
    """The fleet CA certificate(s): the applier's client certificate must chain to it."""


class AgentDocument(Wire):
    """One agent configuration file."""

    name: Name
    """The agent's name, as declared centrally under ``agents:``."""
    listen: HostPort
    """HOST:PORT to listen on (mutual TLS)."""
    tls: AgentTlsDocument
    request_window: Duration | None = None
    """How far a request's timestamp may be from this host's clock, either way (default 5m)."""
    state_dir: FsPath | None = None
    """The plug-ins' data directory; default ``agent-state`` next to this file."""
    targets: dict[Name, Any] = Field(min_length=1)
    """The local targets by name, as in the central ``targets:`` section."""


@dataclass(frozen=True, slots=True)
class AgentTls:
    key_file: Path
    cert_file: Path
    ca_file: Path


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path  # the configuration file, as given
    name: str
    listen_host: str
    listen_port: int
    tls: AgentTls
    request_window: timedelta
    state_dir: Path
    targets: Mapping[str, TargetSpec]  # by name, built like the central section's


class AgentConfigError(ConfigError):
    """The agent's configuration file is invalid: every problem, each at ``file:line:column``."""

    default_code = "agent-config-invalid"

    def __init__(self, path: Path, diagnostics: list[Diagnostic]) -> None:
        count = len(diagnostics)
        first = f": {diagnostics[0]}" if diagnostics else ""
        super().__init__(
            f"the agent configuration {path} has {count} problem{'s' if count != 1 else ''}{first}",
            hint="fix the problems listed, then start the agent again",
        )
        self.diagnostics = diagnostics


def load_agent_config(path: Path) -> AgentConfig:
    """Read, validate and resolve the agent's configuration file; :class:`AgentConfigError` when invalid."""
    source = _read(path)
    positions = Positions(source.text)
    issues: list[tuple[tuple[PathElement, ...], Anchor, str, str, str]] = []
    try:
        data = parse_yaml(source)
    except YamlError as exc:
        problems = [
            Diagnostic(SourceLocation(source.path, p.line, p.column), p.code, p.message, p.hint) for p in exc.problems
        ]
        raise AgentConfigError(path, problems) from None
    document = _document(data, issues)
    targets: dict[str, TargetSpec] = {}
    if document is not None:
        targets = _targets(document, issues)
        issues += [(f.path, "value", f.code, f.message, f.hint) for f in value_findings(document)]
    if issues or document is None:
        diagnostics = sorted(
            Diagnostic(SourceLocation(source.path, *positions.locate(where, anchor)), code, message, hint)
            for where, anchor, code, message, hint in issues
        )
        raise AgentConfigError(path, diagnostics)
    return _resolve(path, document, targets)


def _read(path: Path) -> SourceFile:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the agent configuration {path}: {exc.strerror}",
            code="agent-config-invalid",
            hint="pass --config with the agent's YAML file (see examples/agent/agent.yaml)",
        ) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than 1 MiB", code="agent-config-invalid", hint="is it the right file?")
    try:
        return SourceFile(str(path), data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", code="agent-config-invalid", hint="save it as UTF-8") from None


_Issues = list[tuple[tuple[PathElement, ...], Anchor, str, str, str]]


def _document(data: object, issues: _Issues) -> AgentDocument | None:
    if isinstance(data, dict):
        for key in data:
            if isinstance(key, str) and key.lower() in _SECRET_SETTINGS:
                issues.append(
                    (
                        (key,),
                        "key",
                        FORBIDDEN_SETTING_CODE,
                        f"`{key}` has no place in an agent's configuration: the agent holds no database URL "
                        "and no KMS settings",
                        "remove it: the applier keeps the database and the KMS and pushes each bundle to the agent",
                    )
                )
        data = {key: value for key, value in data.items() if str(key).lower() not in _SECRET_SETTINGS}
    try:
        return AgentDocument.model_validate({} if data is None else data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            found = schema_issue(error)
            hint = found.hint
            if found.path[:1] != ("targets",) and found.code in ("schema-unknown-field", "schema-missing-field"):
                hint = _TOP_HINT if len(found.path) <= 1 else "tls holds key_file, cert_file and ca_file"
            issues.append((found.path, found.anchor, found.code, found.message, hint))
        return None


def _targets(document: AgentDocument, issues: _Issues) -> dict[str, TargetSpec]:
    """Each local target validated by the central section's model (the kinds installed), then built as a spec."""
    model = entry_model(TargetEntry)
    specs: dict[str, TargetSpec] = {}
    dirs = []
    for name, raw in document.targets.items():
        where: tuple[PathElement, ...] = ("targets", name)
        refused = [kind for kind in REFUSED_KINDS if isinstance(raw, dict) and kind in raw]
        if refused:
            kind = refused[0]
            issues.append(
                ((*where, kind), "key", KIND_REFUSED_CODE, f"targets.{name}: {REFUSED_KINDS[kind]}", "")
            )
            continue
        try:
            entry = model.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                found = schema_issue({**error, "loc": (*where, *error["loc"])})
                issues.append((found.path, found.anchor, found.code, found.message, found.hint))
            continue
        issues.extend((f.path, "value", f.code, f.message, f.hint) for f in value_findings(entry, where))
        kind, config = entry.kind()
        dirs.extend(target_dirs("", "targets", name, kind, config))
        specs[name] = _spec(name, kind, config, entry)
    for target, finding in target_dir_findings(dirs, None):
        message = finding.message.replace(" (at {related})", "")
        issues.append((target.path, "value", finding.code, message, finding.hint))
    return specs


def _spec(name: str, kind: str, config: BaseModel, entry: TargetEntry) -> TargetSpec:
    timeout = entry.verify_timeout.delta_or_none or DEFAULT_VERIFY_TIMEOUT
    return TargetSpec(
        name=name,
        kind=kind,
        config=config,
        fingerprint=plugin_fingerprint(kind, config),
        verify=entry.verify,
        sni=entry.sni,
        verify_timeout=timeout,
    )


def _resolve(path: Path, document: AgentDocument, targets: dict[str, TargetSpec]) -> AgentConfig:
    base = path.resolve().parent
    host, _, port = document.listen.rpartition(":")
    window = document.request_window.delta if document.request_window is not None else DEFAULT_REQUEST_WINDOW
    return AgentConfig(
        path=path,
        name=document.name,
        listen_host=host.strip("[]"),
        listen_port=int(port),
        tls=AgentTls(
            key_file=_declared(document.tls.key_file, base),
            cert_file=_declared(document.tls.cert_file, base),
            ca_file=_declared(document.tls.ca_file, base),
        ),
        request_window=window,
        state_dir=_declared(document.state_dir or DEFAULT_STATE_DIR, base),
        targets=MappingProxyType(dict(sorted(targets.items()))),
    )


def _declared(value: str, base: Path) -> Path:
    candidate = Path(value)
    return candidate if candidate.is_absolute() else base / candidate

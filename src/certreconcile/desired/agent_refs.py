"""The ``agents:`` section and the ``AGENT/TARGET`` references of certificates (design.md section 9).

An agent's local targets are declared on its host, never centrally: a certificate names them as
``web-1/edge-nginx`` and the loader makes one :class:`~certreconcile.desired.model.TargetSpec` of kind
``agent`` per referenced pair (:func:`agent_target_specs`). Paths and commands never appear here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from certreconcile.desired.declarations import DeclaredAgent, NodeRef
from certreconcile.desired.documents import AgentDocument
from certreconcile.desired.loader import PathElement
from certreconcile.desired.model import (
    AGENT_TARGET_KIND,
    DEFAULT_AGENT_TIMEOUT,
    AgentSpec,
    AgentTargetRef,
    SourceLocation,
    TargetSpec,
)
from certreconcile.domain.names import CERT_NAME_PATTERN

__all__ = [
    "AgentFinding",
    "agent_findings",
    "agent_specs",
    "agent_target_specs",
    "is_agent_reference",
    "reference_findings",
    "split_reference",
]

_NAME = CERT_NAME_PATTERN.removeprefix("^").removesuffix("$")
_REFERENCE = re.compile(rf"^({_NAME})/({_NAME})$")
_REFERENCE_HINT = "write AGENT/TARGET: an agent declared under agents: and a target of its host, e.g. web-1/edge-nginx"


class AgentFinding(NamedTuple):
    path: tuple[PathElement, ...]  # relative to the node checked (the agent entry, or the certificate)
    code: str
    message: str
    hint: str


def is_agent_reference(target: str) -> bool:
    """A certificate's target that names an agent's local target (it holds a ``/``)."""
    return "/" in target


def split_reference(target: str) -> tuple[str, str] | None:
    """``(agent, local target)`` of a well-formed ``AGENT/TARGET``, else None."""
    match = _REFERENCE.match(target)
    return (match.group(1), match.group(2)) if match else None


def agent_findings(name: str, document: AgentDocument) -> Iterator[AgentFinding]:
    """The checks of one ``agents:`` entry beyond its schema: the URL's port range."""
    try:
        port = urlsplit(document.url).port
    except ValueError:
        port = None
    if port is None or not 0 < port < 65536:
        yield AgentFinding(
            ("url",),
            "invalid-port",
            f"agents.{name}.url: the port of {document.url!r} is out of range",
            "use a port 1-65535, e.g. https://web-1.internal:9443",
        )


def reference_findings(
    certificate: str, targets: Iterable[str], agents: Mapping[str, DeclaredAgent]
) -> Iterator[AgentFinding]:
    """Every ``AGENT/TARGET`` of a certificate's ``targets`` that is malformed or names no declared agent."""
    for index, target in enumerate(targets):
        if not is_agent_reference(target):
            continue
        parts = split_reference(target)
        if parts is None:
            yield AgentFinding(
                ("targets", index),
                "invalid-target-reference",
                f"certificate {certificate!r} names {target!r}, which is neither a target name nor AGENT/TARGET",
                _REFERENCE_HINT,
            )
        elif parts[0] not in agents:
            declared = f" (declared agents: {', '.join(sorted(agents))})" if agents else ""
            yield AgentFinding(
                ("targets", index),
                "unknown-agent",
                f"certificate {certificate!r} names the agent {parts[0]!r} (in {target!r}), which is not declared",
                f"declare it under agents:, e.g. agents: {{{parts[0]}: {{url: https://HOST:9443}}}}{declared}",
            )


def agent_specs(
    agents: Mapping[str, DeclaredAgent], located: Mapping[NodeRef, SourceLocation]
) -> dict[str, AgentSpec]:
    """The frozen ``agents:``, by name."""
    return {
        name: AgentSpec(name, agent.url, agent.timeout or DEFAULT_AGENT_TIMEOUT, located.get(agent.ref))
        for name, agent in sorted(agents.items())
    }


def agent_target_specs(references: Iterable[str], agents: Mapping[str, AgentSpec]) -> dict[str, TargetSpec]:
    """One target spec of kind ``agent`` per referenced ``AGENT/TARGET`` (validated before: each is well-formed).

    Its fingerprint covers the agent's URL and timeout, so changing them is a changed declaration.
    """
    specs: dict[str, TargetSpec] = {}
    for reference in sorted(set(references)):
        parts = split_reference(reference)
        if parts is None or parts[0] not in agents:
            continue  # reported by reference_findings
        agent = agents[parts[0]]
        config = AgentTargetRef(
            agent=agent.name, target=parts[1], url=agent.url, timeout_seconds=agent.timeout.total_seconds()
        )
        specs[reference] = TargetSpec(
            name=reference,
            kind=AGENT_TARGET_KIND,
            config=config,
            fingerprint=_fingerprint(config),
            location=agent.location,
            verify=None,
        )
    return specs


def _fingerprint(config: AgentTargetRef) -> str:
    """Like ``plugin_fingerprint``: SHA-256 of the canonical JSON of the kind and the configuration."""
    payload = {"kind": AGENT_TARGET_KIND, "config": config.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

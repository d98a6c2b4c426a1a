"""Pydantic's errors on one desired-state file, as issues with a stable code, a message and a hint."""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from certreconcile.desired.checks import format_path
from certreconcile.desired.documents import PluginEntry, desired_document_model
from certreconcile.desired.loader import Anchor, PathElement

__all__ = ["SchemaIssue", "schema_issue"]


class SchemaIssue(NamedTuple):
    path: tuple[PathElement, ...]
    anchor: Anchor
    code: str
    message: str
    hint: str = ""


_TYPE_ERRORS = frozenset(
    {
        "model_type",
        "model_attributes_type",
        "dict_type",
        "list_type",
        "tuple_type",
        "string_type",
        "bool_type",
        "int_type",
        "float_type",
        "none_required",
        "is_instance_of",
        "string_sub_type",
    }
)
_TYPE_HINTS: dict[str, str] = {
    # Booleans are strict: a string such as "yes", "on", "1" or "true" is refused, never guessed at.
    "bool_type": "write true or false, unquoted",
}
_PATTERN_HINTS: dict[str, str] = {
    "name": "use 1-63 lower-case letters, digits and inner hyphens, e.g. shop-api",
    "lifetime": "write a whole number and a unit (s, m, h, d, w), e.g. 90d",
    "ca_lifetime": "write a whole number and a unit (s, m, h, d, w), e.g. 3650d",
    "renew_before": "write a duration such as 30d or a percentage of the lifetime such as 33%",
    "verify": "write HOST:PORT, e.g. 127.0.0.1:443 or [::1]:443",
    "server": "write HOST:PORT, e.g. 127.0.0.1:53",
    "propagation_timeout": "write a whole number and a unit (s, m, h, d, w), e.g. 120s",
    "tsig_secret_env": "name an environment variable, e.g. CORP_TSIG; never the secret itself",
    "secret_env": "name an environment variable, e.g. HOOK_SECRET; never the secret itself",
    "timeout": "write a whole number and a unit (s, m, h, d, w), e.g. 60s",
    "url": "write a full URL such as https://host:8443/path (webhook: https:// only, no user:password@)",
}


_AGENT_NAME_HINT = (
    "a central target name has no '/': a certificate names an agent's local target as AGENT/TARGET; "
    "the agent goes under agents:, its targets into its host's agent.yaml"
)


#: Checked in order: a bool is an int too.
_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    ((int, float), "a number"),
    (str, "a string"),
    ((list, tuple), "a list"),
    (dict, "a mapping"),
)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    for kinds, name in _TYPE_NAMES:
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def schema_issue(error: ErrorDetails) -> SchemaIssue:
    """The issue of one pydantic error: where (a path and an anchor), a code, a message and a hint."""
    return _fleet_issue(tuple(error["loc"]), error["type"], error) or _schema_issue(error)


def _schema_issue(error: ErrorDetails) -> SchemaIssue:
    loc: tuple[PathElement, ...] = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"]
    if loc and loc[-1] == "[key]":
        path = loc[:-1]
        hint = _PATTERN_HINTS["name"] if kind == "string_pattern_mismatch" else ""
        return SchemaIssue(
            path,
            "key",
            "schema-invalid-value",
            f"invalid name {str(path[-1])!r} in {format_path(path[:-1])}",
            hint or message,
        )
    if kind == "missing":
        parent = loc[:-1]
        model = _model_at(parent)
        hint = f"required keys: {', '.join(_required(model))}" if model else ""
        return SchemaIssue(
            parent,
            "value",
            "schema-missing-field",
            f"missing required key `{loc[-1]}` in {format_path(parent)}",
            hint,
        )
    if kind == "extra_forbidden":
        parent = loc[:-1]
        model = _model_at(parent)
        hint = ""
        if model is not None and issubclass(model, PluginEntry):
            common = [name for name in model.model_fields if name not in model.KINDS]
            hint = f"one kind key, one of: {', '.join(model.KINDS)}"
            if common:
                hint += f"; plus {', '.join(common)}"
        elif model is not None:
            hint = f"allowed keys: {', '.join(model.model_fields)}"
        return SchemaIssue(
            loc, "key", "schema-unknown-field", f"unknown key `{loc[-1]}` in {format_path(parent)}", hint
        )
    if kind in ("plugin_kind_missing", "plugin_kind_multiple"):
        code = "schema-missing-kind" if kind == "plugin_kind_missing" else "schema-multiple-kinds"
        return SchemaIssue(loc, "value", code, f"{format_path(loc)}: {message}")
    if kind in _TYPE_ERRORS:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            message = "expected a mapping"
        return SchemaIssue(
            loc,
            "value",
            "schema-invalid-type",
            f"{format_path(loc)}: {message}, got {_type_name(error['input'])}",
            _TYPE_HINTS.get(kind, ""),
        )
    hint = ""
    if kind == "string_pattern_mismatch":
        field_name = next((element for element in reversed(loc) if isinstance(element, str)), "")
        hint = _PATTERN_HINTS.get(field_name, "")
        message = f"{error['input']!r} is not valid"
    return SchemaIssue(loc, "value", "schema-invalid-value", f"{format_path(loc)}: {message}", hint)


def _fleet_issue(loc: tuple[PathElement, ...], kind: str, error: ErrorDetails) -> SchemaIssue | None:
    """The errors an agent's declaration makes, said in its terms (design.md section 9); None for others."""
    if kind == "string_pattern_mismatch" and loc[:1] == ("agents",) and loc[-1] == "url":
        return SchemaIssue(
            loc,
            "value",
            "schema-invalid-value",
            f"{format_path(loc)}: {error['input']!r} is not valid",
            "write https://HOST:PORT and nothing after the port, e.g. https://web-1.internal:9443",
        )
    if kind == "string_pattern_mismatch" and loc[:1] == ("targets",) and loc[-1] == "[key]" and "/" in str(loc[1]):
        name = str(loc[1])
        message = f"invalid name {name!r} in targets"
        return SchemaIssue(loc[:-1], "key", "schema-invalid-value", message, _AGENT_NAME_HINT)
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "targets" and loc[2] == "agent":
        return SchemaIssue(
            loc,
            "key",
            "agent-target-declared",
            f"{format_path(loc[:2])}: `agent` is not a kind of the central targets: an agent's targets are "
            "declared on its host",
            "declare the agent under agents: and name its local target in a certificate's targets as AGENT/TARGET",
        )
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated from a field annotation."""
    while True:
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        elif origin is not None and hasattr(annotation, "__metadata__"):
            annotation = get_args(annotation)[0]
        else:
            return annotation


def _model_at(path: Sequence[PathElement]) -> type[BaseModel] | None:
    """The wire model class describing the mapping at ``path`` (for hints)."""
    current: Any = desired_document_model()
    for element in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(element, str) or element not in current.model_fields:
                return None
            current = current.model_fields[element].annotation
        elif get_origin(current) in (list, tuple) and isinstance(element, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _required(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.is_required()]

"""The JSON Schema of one desired-state file, generated from the pydantic wire models
of the installed plugin kinds (a kind installed from another package is in it too).

It serves editors (``# yaml-language-server: $schema=...``) and external validators;
certreconcile itself validates with pydantic. ``schemas/desired-state.schema.json`` is
the schema of the built-in kinds (``make schema`` writes it), and a test keeps
the two identical; ``certreconcile schema`` prints the schema of every installed kind.
"""

from __future__ import annotations

import json
from typing import Any

from certreconcile.desired.documents import desired_document_model

__all__ = ["SCHEMA_ID", "desired_state_json_schema", "render_json_schema"]

SCHEMA_ID = "https://certreconcile.dev/schemas/desired-state.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def desired_state_json_schema(*, builtin_only: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one desired-state YAML file: every installed plugin kind,
    or certreconcile's own kinds only (``builtin_only``, the committed file)."""
    schema = desired_document_model(builtin_only=builtin_only).model_json_schema(mode="validation")
    schema["$schema"] = _DIALECT
    schema["$id"] = SCHEMA_ID
    schema["title"] = "certreconcile desired state (one file)"
    schema["description"] = (
        "One file of a certreconcile desired-state directory. All files of the directory "
        "(*.yaml, *.yml, recursively) are merged: certificate and plugin names are unique "
        "across files, and kms and policy may each be declared in one file only. "
        "Cross-file rules (references, domains, policy) are checked by `certreconcile validate`."
    )
    return schema


def render_json_schema(*, builtin_only: bool = False) -> str:
    """The committed form: sorted keys, indent 2, trailing newline."""
    schema = desired_state_json_schema(builtin_only=builtin_only)
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


"""Secrets named by ``*_env`` keys: is each variable set where the plan will be applied?

``validate`` runs where secrets may be absent (a pull request's checks), so it does not look at
the environment. ``plan`` and ``apply`` call :func:`unset_env_diagnostics` for the plugins their
changes use, and refuse with a positioned error before anything is issued.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel

from certreconcile.desired.loader import Positions, YamlError, parse_yaml, read_sources
from certreconcile.desired.model import DesiredState, PluginSpec, SourceLocation
from certreconcile.desired.validate import Diagnostic

__all__ = ["env_references", "unset_env_diagnostics"]

_SECTIONS = ("kms", "issuers", "dns_providers", "targets")


def env_references(config: BaseModel, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(path of the key inside config, variable name)`` of every ``*_env`` key the plugin reads."""
    # A config may say which of its *_env keys its settings leave unread (vault: the AppRole ids).
    unused_env_fields = getattr(config, "unused_env_fields", None)
    unused: frozenset[str] = unused_env_fields() if callable(unused_env_fields) else frozenset()
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from env_references(value, (*path, name))
        elif name.endswith("_env") and isinstance(value, str) and name not in unused:
            yield (*path, name), value


def _spec(desired: DesiredState, section: str, name: str) -> PluginSpec | None:
    if section == "kms":
        return desired.kms
    plugins: Mapping[str, PluginSpec] = getattr(desired, section)
    return plugins.get(name)


def unset_env_diagnostics(
    desired: DesiredState, used: Iterable[tuple[str, str]], env: Mapping[str, str], directory: Path
) -> list[Diagnostic]:
    """An ``env-unset`` error for each ``*_env`` variable of the ``(section, name)`` plugins that is
    unset or blank in ``env``, at the key's position (or its plugin's, when the default is used)."""
    missing: list[tuple[tuple[str, ...], str]] = []
    for section, name in sorted(set(used)):
        spec = _spec(desired, section, name)
        if spec is None:
            continue
        prefix = ("kms", spec.kind) if section == "kms" else (section, name, spec.kind)
        missing.extend(
            ((*prefix, *path), variable)
            for path, variable in env_references(spec.config)
            if not env.get(variable, "").strip()
        )
    if not missing:
        return []
    declared_in = _declaring_files(directory, desired.git_commit)
    diagnostics = []
    for path, variable in missing:
        file, positions = declared_in.get(path[:1] if path[0] == "kms" else path[:2], ("", None))
        line, column = positions.locate(path) if positions is not None else (1, 1)
        diagnostics.append(
            Diagnostic(
                SourceLocation(file, line, column),
                "env-unset",
                f"{'.'.join(path)}: the environment variable {variable} is not set (or blank), "
                "and the planned changes need it",
                f"export {variable} where plan and apply run (never write the secret into these files), "
                f"or name another variable in {path[-1]}",
            )
        )
    return sorted(diagnostics)


def _declaring_files(directory: Path, commit: str | None) -> dict[tuple[str, ...], tuple[str, Positions]]:
    """Which file declares each plugin: ``("kms",)`` or ``(section, name)`` -> (file, positions)."""
    found: dict[tuple[str, ...], tuple[str, Positions]] = {}
    for source in read_sources(directory, commit).files:
        try:
            data = parse_yaml(source)
        except YamlError:
            continue
        if not isinstance(data, dict):
            continue
        positions = Positions(source.text)
        for section in _SECTIONS:
            entries = data.get(section)
            if section == "kms" and entries is not None:
                found.setdefault(("kms",), (source.path, positions))
            elif isinstance(entries, dict):
                for name in entries:
                    found.setdefault((section, str(name)), (source.path, positions))
    return found

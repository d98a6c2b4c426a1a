"""What every plug-in factory receives (:class:`PluginContext`), and the factory of targets.

Apart from :mod:`certreconcile.plugins.registry` (which re-exports both) because the agent on a
server host builds its local targets with them and must reach neither the state store nor a KMS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from certreconcile.desired.kinds import kind_module
from certreconcile.desired.model import TargetSpec
from certreconcile.plugins.ports import Dns01Provider, Target

__all__ = ["PluginContext", "create_target"]


@dataclass(frozen=True, slots=True)
class PluginContext:
    desired_dir: Path  # relative paths in declarations are relative to this
    data_dir: Path  # CERTRECONCILE_DATA_DIR
    env: Mapping[str, str]
    # The declared DNS-01 providers, built before the issuers that use them.
    dns_providers: Mapping[str, Dns01Provider] = field(default_factory=dict)


def create_target(spec: TargetSpec, context: PluginContext) -> Target:
    """The adapter of ``spec``'s kind (its kind module's ``create``); nothing is contacted."""
    return cast(Target, kind_module("targets", spec.kind).create(spec, context))

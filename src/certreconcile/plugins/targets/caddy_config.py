"""The ``caddy`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.caddy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'A running Caddy, through its admin API.'

class CaddyTargetConfig(Wire):
    """Load each certificate into a running Caddy through its admin API (``apps/tls/certificates/load_pem``).

    Each certificate is one ``load_pem`` entry with ``@id`` ``certreconcile-<name>`` and the tag
    ``certreconcile:<name>``, replaced in place on rotation; other entries stay untouched. Caddy
    serves it on every server with TLS (``tls_connection_policies``) for the names it holds.
    """

    admin: str = Field(default="http://localhost:2019", pattern=r"^https?://[^\s/?#@]+/?$")
    """Base URL of Caddy's admin API (keep it on loopback: it hands out the loaded keys)."""
    tags: tuple[str, ...] = ()
    """Extra tags on the entry (besides ``certreconcile:<name>``), for ``certificate_selection``."""


Config = CaddyTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: Caddy's admin API is first asked at the first deployment or read-back."""
    from certreconcile.plugins.targets.caddy import CaddyTarget

    assert isinstance(spec.config, CaddyTargetConfig)
    return CaddyTarget(spec.name, spec.config, **verification(spec))

"""The ``lexicon`` DNS-01 provider kind (dns-lexicon, about 90 DNS providers): its configuration and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from certreconcile.desired.fields import ENV_NAME_PATTERN, Wire
from certreconcile.plugins.dns01 import propagation_waiter

if TYPE_CHECKING:
    from certreconcile.desired.model import PluginSpec
    from certreconcile.plugins.ports import Dns01Provider
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = "Any DNS provider of dns-lexicon (pip install 'certreconcile[lexicon]')."

OptionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]


class LexiconConfig(Wire):
    """DNS-01 through dns-lexicon: one of its providers (ovh, gandi, powerdns, hetzner...), by name.

    lexicon's provider options are written without their ``--``, with ``_`` for ``-``
    (``--pdns-server`` is ``pdns_server``); secrets are never written here but named in
    ``credentials_env``, which maps an option to the environment variable holding its value.
    """

    provider: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """lexicon's name of the DNS provider (``lexicon --help`` lists them), e.g. ``ovh``."""
    zone: str | None = Field(default=None, min_length=1)
    """The zone (lexicon's domain) holding the records, e.g. example.com; null: found by SOA
    queries (to the nameservers when declared, else through the system resolver)."""
    options: dict[OptionName, str | int | bool] = Field(default_factory=dict)
    """The provider's options that are not secrets (an API endpoint, a region...)."""
    credentials_env: dict[OptionName, EnvName] = Field(default_factory=dict)
    """The provider's secret options: option name to the environment variable holding its value,
    e.g. ``{auth_token: PDNS_API_KEY}`` (never the value)."""
    ttl: int = Field(default=60, ge=1, le=86400)
    """TTL of the challenge records, in seconds (some providers impose a minimum)."""


Config = LexiconConfig


def create(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01 import propagation_settings
    from certreconcile.plugins.dns01.lexicon_provider import LexiconProvider

    assert isinstance(spec.config, LexiconConfig)
    _, nameservers = propagation_settings(spec)
    return LexiconProvider(
        spec.name, spec.config, env=context.env, propagation=propagation_waiter(spec), nameservers=nameservers
    )

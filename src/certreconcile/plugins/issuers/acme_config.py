"""The ``acme`` issuer kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.issuers.acme`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    Duration,
    FsPath,
    HostPort,
    ParsedDuration,
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.actual.store import AcmeStore, SessionSource
    from certreconcile.desired.model import IssuerSpec
    from certreconcile.plugins.ports import Issuer, Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = [
    "ACME_DIRECTORY_PRESETS",
    "SUMMARY",
    "USES_CHALLENGES",
    "AcmeEabConfig",
    "AcmeHttp01Config",
    "AcmeStandaloneConfig",
    "AcmeWebrootConfig",
    "Config",
    "create",
]

SUMMARY = 'An ACME CA (RFC 8555).'

#: ``directory:`` may name one of these instead of a URL.
ACME_DIRECTORY_PRESETS: dict[str, str] = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


class AcmeEabConfig(Wire):
    """External Account Binding (RFC 8555 §7.3.4): both values come from the environment."""

    key_id_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the EAB key id."""
    hmac_key_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the base64url EAB HMAC key (never the key)."""


class AcmeStandaloneConfig(Wire):
    """A built-in HTTP server answering ``/.well-known/acme-challenge/`` while orders are open."""

    listen: HostPort = "0.0.0.0:80"
    """Address to listen on; the CA connects to port 80 of each name, so forward it here."""


class AcmeWebrootConfig(Wire):
    """Token files written under ``<path>/.well-known/acme-challenge/`` of a web server's document root."""

    path: FsPath = Field(min_length=1)
    """The document root; a relative path is relative to the desired-state directory."""


class AcmeHttp01Config(Wire):
    """How HTTP-01 challenges are answered: exactly one of standalone or webroot."""

    standalone: AcmeStandaloneConfig | None = None
    """Serve the tokens from a built-in server."""
    webroot: AcmeWebrootConfig | None = None
    """Write the tokens into a web server's document root."""

    @model_validator(mode="after")
    def _exactly_one(self) -> AcmeHttp01Config:
        if (self.standalone is None) == (self.webroot is None):
            raise PydanticCustomError("http01_kind", "http01 needs exactly one of: standalone, webroot")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        definition = handler.resolve_ref_schema(json_schema)
        definition["oneOf"] = [{"required": ["standalone"]}, {"required": ["webroot"]}]
        return json_schema


class AcmeIssuerConfig(Wire):
    """An ACME CA (RFC 8555): Let's Encrypt, or an internal one (OpenBao/Vault PKI, step-ca, Pebble)."""

    directory: str = Field(
        min_length=1, json_schema_extra={"pattern": r"^(https?://.+|letsencrypt|letsencrypt-staging)$"}
    )
    """Directory URL (https://...; http:// only for test CAs), or a preset: letsencrypt, letsencrypt-staging."""
    email: str | None = None
    """Contact address of the account; null: none."""
    eab: AcmeEabConfig | None = None
    """External Account Binding, when the CA requires it."""
    profile: str | None = None
    """ACME profile to request (e.g. shortlived, tlsserver, classic), when the CA offers profiles."""
    preferred_chain: str | None = None
    """Common name of the root (or top intermediate) of the chain to prefer among the CA's alternates."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the directory's TLS (internal CAs, Pebble); null: the system roots."""
    http01: AcmeHttp01Config = AcmeHttp01Config(standalone=AcmeStandaloneConfig())
    """How HTTP-01 challenges are answered; default: standalone on 0.0.0.0:80."""
    order_timeout: Duration = ParsedDuration("5m")
    """Give up on an order not finished within this time (it is resumed on the next apply)."""

    @field_validator("directory")
    @classmethod
    def _directory_is_a_url_or_preset(cls, value: str) -> str:
        if value in ACME_DIRECTORY_PRESETS or value.startswith(("https://", "http://")):
            return value
        raise PydanticCustomError(
            "acme_directory",
            "directory must be an https:// URL or a preset ({presets})",
            {"presets": ", ".join(ACME_DIRECTORY_PRESETS)},
        )

    @property
    def directory_url(self) -> str:
        return ACME_DIRECTORY_PRESETS.get(self.directory, self.directory)


Config = AcmeIssuerConfig


#: Certificates of this kind are validated by ACME challenges (default: http-01).
USES_CHALLENGES = True


def create(spec: IssuerSpec, context: PluginContext, store: SessionSource[AcmeStore], kms: Kms) -> Issuer:
    """No I/O here: the directory is read and the account registered at the first order."""
    from certreconcile.plugins.issuers.acme.issuer import AcmeIssuer
    from certreconcile.plugins.issuers.acme.solvers import StandaloneHttp01Solver, WebrootHttp01Solver
    from certreconcile.plugins.paths import declared_path, optional_declared_path
    from certreconcile.plugins.ports import Http01Solver

    assert isinstance(spec.config, AcmeIssuerConfig)
    config = spec.config
    http01: Http01Solver
    if config.http01.webroot is not None:
        http01 = WebrootHttp01Solver(declared_path(config.http01.webroot.path, context.desired_dir))
    else:
        assert config.http01.standalone is not None
        host, _, port = config.http01.standalone.listen.rpartition(":")
        http01 = StandaloneHttp01Solver(host.strip("[]"), int(port))
    ca_bundle = optional_declared_path(config.ca_bundle, context.desired_dir)
    return AcmeIssuer(
        spec.name,
        config,
        store,
        kms,
        http01=http01,
        dns_providers=context.dns_providers,
        env=context.env,
        ca_bundle=str(ca_bundle) if ca_bundle is not None else None,
    )

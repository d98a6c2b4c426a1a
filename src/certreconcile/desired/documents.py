"""Wire models for ONE desired-state YAML file (pydantic v2).

These classes describe what a user may write, nothing more: every model forbids
unknown keys and is frozen. Cross-file rules (references, duplicates, policy) live
in :mod:`certreconcile.desired.validate`; past validation nothing outside
``desired/`` sees these classes, except the plugin ``*Config`` models, which a
plugin receives as its validated configuration.

A plugin entry (the ``kms`` section, each issuer, target and DNS provider) is a
mapping with exactly ONE *kind* key (``local_ca``, ``files``...) whose value is that
kind's configuration, plus the keys common to its section (``verify`` for targets).
A kind key with an empty value (``local:``) means the kind's default configuration.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from certreconcile.desired.model import Challenge, OnDelete
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import CERT_NAME_PATTERN

__all__ = [
    "ACME_DIRECTORY_PRESETS",
    "DURATION_PATTERN",
    "HOST_PORT_PATTERN",
    "RENEW_BEFORE_PATTERN",
    "AcmeEabConfig",
    "AcmeHttp01Config",
    "AcmeIssuerConfig",
    "AwsAcmTargetConfig",
    "AwsKmsConfig",
    "CaddyTargetConfig",
    "CertificateDocument",
    "Checked",
    "CloudflareConfig",
    "DesiredDocument",
    "DnsProviderEntry",
    "EnvoyTargetConfig",
    "FilesTargetConfig",
    "GcpKmsConfig",
    "HaproxyTargetConfig",
    "IssuerEntry",
    "KmsCacheConfig",
    "KmsEntry",
    "LocalCaConfig",
    "LocalKmsConfig",
    "NginxTargetConfig",
    "PluginEntry",
    "PolicyDocument",
    "Rfc2136Config",
    "Route53Config",
    "TargetEntry",
    "TraefikTargetConfig",
    "VaultConnectionConfig",
    "VaultKmsConfig",
    "VaultPkiIssuerConfig",
    "WebhookTargetConfig",
]

# Patterns are part of the JSON Schema too; semantic limits (a zero duration, a port
# above 65535, a blank command...) are checked in checks.py, found by the Checked marker
# of each field's type, where the message can say more.
DURATION_PATTERN = r"^[0-9]+[smhdw]$"
RENEW_BEFORE_PATTERN = r"^(?:[0-9]+[smhdw]|[0-9]+(?:\.[0-9]+)?%)$"
HOST_PORT_PATTERN = r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Checked(enum.Enum):
    """Marks a field (in its ``Annotated`` type) for the value checks of :mod:`certreconcile.desired.checks`."""

    DURATION = "duration"  # above zero, at most 100 years
    LIFETIME = "lifetime"  # a certificate lifetime: a duration of at least an hour
    PATH = "path"  # a file path: no NUL
    TARGET_DIR = "target-dir"  # a directory a target writes into: a path, not shared, outside the repository
    COMMAND = "command"  # split like a shell would (no shell runs it): not blank, quotes balanced
    HOST_PORT = "host-port"  # HOST:PORT with a port from 1 to 65535 (``unix:/path`` is left alone)


Name = Annotated[
    str,
    Field(pattern=CERT_NAME_PATTERN, description="1-63 lower-case letters, digits and inner hyphens"),
]
Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, description="a whole number and a unit (s, m, h, d, w), e.g. 90d"),
    Checked.DURATION,
]
Lifetime = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, description="a whole number and a unit (s, m, h, d, w), e.g. 90d"),
    Checked.LIFETIME,
]
HostPort = Annotated[
    str, Field(pattern=HOST_PORT_PATTERN, description="HOST:PORT, e.g. 127.0.0.1:443"), Checked.HOST_PORT
]
FsPath = Annotated[str, Checked.PATH]
TargetDir = Annotated[str, Checked.TARGET_DIR]
Command = Annotated[str, Checked.COMMAND]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ---------------------------------------------------------------- plugin configs


class LocalKmsConfig(_Wire):
    """The local KMS: keys are wrapped with a key-encryption key kept in a local file."""

    key_file: FsPath | None = None
    """Path of the key-encryption key file; default: inside the data directory. Never the key itself."""


class AwsKmsConfig(_Wire):
    """AWS KMS: one GenerateDataKey (AES-256) per private key, bound to its row by an encryption context.

    Credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``,
    instance roles), never from this file.
    """

    key_id: str = Field(min_length=1)
    """The KMS key wrapping the data keys: key id, key ARN, alias name (``alias/certs``) or alias ARN."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region; default: from the key ARN, else ``AWS_REGION``/``AWS_DEFAULT_REGION``."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another KMS endpoint (a VPC endpoint, a test server); default: AWS's own."""


class VaultConnectionConfig(_Wire):
    """Where a Vault/OpenBao server is and how to log in: shared by the vault KMS and the vault_pki issuer."""

    url: str = Field(pattern=r"^https?://")
    """Address of the Vault/OpenBao server, e.g. https://vault.example.com:8200."""
    auth: Literal["token", "approle", "kubernetes"] = "token"
    """token: ``VAULT_TOKEN`` (or ``BAO_TOKEN``); approle: log in with the ids named below;
    kubernetes: log in with the pod's service-account token and ``kubernetes_role``."""
    role_id_env: str = Field(default="VAULT_ROLE_ID", pattern=ENV_NAME_PATTERN)
    """Environment variable holding the AppRole role id (auth: approle)."""
    secret_id_env: str = Field(default="VAULT_SECRET_ID", pattern=ENV_NAME_PATTERN)
    """Environment variable holding the AppRole secret id (auth: approle); never the secret itself."""
    kubernetes_role: str | None = Field(default=None, min_length=1)
    """The Vault role bound to the service account (auth: kubernetes; required there)."""
    kubernetes_mount: str = Field(default="kubernetes", min_length=1)
    """Mount path of the Kubernetes auth method (auth: kubernetes)."""
    kubernetes_token_path: FsPath = Field(default="/var/run/secrets/kubernetes.io/serviceaccount/token", min_length=1)
    """File holding the service-account JWT, read at each login (auth: kubernetes)."""
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace; default: none."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the server's TLS; a relative path is relative to the desired-state directory."""

    @model_validator(mode="after")
    def _kubernetes_needs_role(self) -> VaultConnectionConfig:
        if self.auth == "kubernetes" and not self.kubernetes_role:
            raise PydanticCustomError("vault_kubernetes_role", "auth: kubernetes needs kubernetes_role")
        return self


class VaultKmsConfig(VaultConnectionConfig):
    """Vault or OpenBao transit: a data key per private key, bound to its row as associated data."""

    mount: str = Field(default="transit", min_length=1)
    """Mount path of the transit secrets engine."""
    key: str = Field(min_length=1)
    """Name of the transit key (type aes256-gcm96) wrapping the data keys."""


GCP_KEY_NAME_PATTERN = r"^projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s:]+$"


class GcpKmsConfig(_Wire):
    """Google Cloud KMS: a local data key per private key, encrypted by a CryptoKey with the row as AAD.

    The OAuth access token comes from ``GOOGLE_OAUTH_ACCESS_TOKEN`` or the GCE metadata server,
    never from this file.
    """

    key_name: str = Field(pattern=GCP_KEY_NAME_PATTERN)
    """The CryptoKey (purpose ENCRYPT_DECRYPT): ``projects/P/locations/L/keyRings/R/cryptoKeys/K``, not a version."""
    endpoint: str = Field(default="https://cloudkms.googleapis.com", pattern=r"^https?://")
    """Cloud KMS endpoint (a Private Service Connect endpoint, a test server); default: Google's own."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the endpoint's TLS; a relative path is relative to the desired-state directory."""


class KmsCacheConfig(_Wire):
    """A short-lived in-memory cache of unwrapped data keys (fewer KMS calls; off unless declared)."""

    max_age: Duration = "5m"
    """How long an unwrapped data key may be reused."""
    max_uses: int = Field(default=100, ge=1)
    """How many times an unwrapped data key may be reused."""
    max_size: int = Field(default=1000, ge=1)
    """How many data keys the cache holds at most (the least recently used goes first)."""


class LocalCaConfig(_Wire):
    """A private CA run by certreconcile itself (its key wrapped by the KMS)."""

    common_name: str = Field(default="certreconcile local CA", min_length=1)
    """Common name of the CA certificate."""
    lifetime: Lifetime = "90d"
    """Lifetime of each issued certificate."""
    ca_lifetime: Lifetime = "3650d"
    """Lifetime of the CA certificate itself."""


#: ``directory:`` may name one of these instead of a URL.
ACME_DIRECTORY_PRESETS: dict[str, str] = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


class AcmeEabConfig(_Wire):
    """External Account Binding (RFC 8555 §7.3.4): both values come from the environment."""

    key_id_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the EAB key id."""
    hmac_key_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the base64url EAB HMAC key (never the key)."""


class AcmeStandaloneConfig(_Wire):
    """A built-in HTTP server answering ``/.well-known/acme-challenge/`` while orders are open."""

    listen: HostPort = "0.0.0.0:80"
    """Address to listen on; the CA connects to port 80 of each name, so forward it here."""


class AcmeWebrootConfig(_Wire):
    """Token files written under ``<path>/.well-known/acme-challenge/`` of a web server's document root."""

    path: FsPath = Field(min_length=1)
    """The document root; a relative path is relative to the desired-state directory."""


class AcmeHttp01Config(_Wire):
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


class AcmeIssuerConfig(_Wire):
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
    order_timeout: Duration = "5m"
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


class VaultPkiIssuerConfig(VaultConnectionConfig):
    """A Vault or OpenBao PKI role signs each CSR (``<mount>/sign/<role>``)."""

    mount: str = Field(default="pki", min_length=1)
    """Mount path of the PKI secrets engine."""
    role: str = Field(min_length=1)
    """The PKI role that signs: it decides the allowed names, key types and maximum TTL."""
    ttl: Lifetime | None = None
    """Lifetime requested for each certificate (capped by the role's max_ttl); null: the role's ttl."""


class FilesTargetConfig(_Wire):
    """Write each certificate to ``<dir>/<name>/{fullchain,chain,cert,privkey}.pem``."""

    dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    reload_command: Command | None = None
    """Command run after files changed (e.g. ``systemctl reload nginx``); null: none."""


class NginxTargetConfig(_Wire):
    """nginx: ``<cert_dir>/<name>/{fullchain,chain,cert,privkey}.pem``, checked by ``nginx -t``, then a reload.

    When the test command fails, the previous files are put back (or the new folder removed) and
    nginx is not reloaded. The reload is SIGHUP to the master process named by ``pid_file``, else
    ``reload_command``, else ``<binary> -s reload``. Point ``ssl_certificate`` at
    ``<cert_dir>/<name>/fullchain.pem`` and ``ssl_certificate_key`` at ``<cert_dir>/<name>/privkey.pem``.
    """

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["pid_file", "reload_command"]}})

    cert_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    pid_file: FsPath | None = None
    """nginx's pid file (its ``pid`` directive, e.g. /run/nginx.pid): reload by SIGHUP to that process."""
    test_command: Command | None = None
    """Configuration test run after writing (no shell), e.g. ``nginx -t -c /etc/nginx/nginx.conf``;
    null: ``<binary> -t``."""
    reload_command: Command | None = None
    """Reload command (no shell), e.g. ``systemctl reload nginx``; instead of pid_file."""
    binary: FsPath = Field(default="nginx", min_length=1)
    """The nginx executable for the default test and reload commands."""

    @model_validator(mode="after")
    def _one_reload(self) -> NginxTargetConfig:
        if self.pid_file is not None and self.reload_command is not None:
            raise PydanticCustomError("nginx_reload", "pid_file and reload_command exclude each other: choose one")
        return self


class HaproxyTargetConfig(_Wire):
    """HAProxy: ``<cert_dir>/<name>.pem`` (certificate, chain and key, 0600) plus the ``<name>/`` folder.

    With ``runtime_api`` the certificate is replaced in memory (``set ssl cert`` + ``commit ssl cert``),
    without a reload; that needs a bind line loading ``crt <cert_dir>/<name>.pem`` (or ``crt <cert_dir>``)
    and a ``stats socket ... level admin``. A certificate HAProxy has not loaded yet, or no
    runtime_api: the files are written, then HAProxy is reloaded (``reload_command``, else SIGUSR2
    to the master process of ``pid_file``: master-worker mode, ``-W``).
    """

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["pid_file", "reload_command"]}})

    cert_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    runtime_api: Annotated[str, Checked.HOST_PORT] | None = Field(
        default=None, pattern=r"^(?:unix:/\S+|(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):[0-9]{1,5})$"
    )
    """HAProxy's admin socket: ``unix:/run/haproxy/admin.sock`` or ``127.0.0.1:9999`` (level admin)."""
    reload_command: Command | None = None
    """Reload command (no shell), e.g. ``systemctl reload haproxy``; instead of pid_file."""
    pid_file: FsPath | None = None
    """The master's pid file (``-p``, master-worker mode): reload by SIGUSR2 to that process."""
    test_command: Command | None = None
    """Configuration check run after writing (no shell), e.g. ``haproxy -c -f /etc/haproxy/haproxy.cfg``;
    on failure the previous files are put back. null: none."""

    @model_validator(mode="after")
    def _one_reload(self) -> HaproxyTargetConfig:
        if self.pid_file is not None and self.reload_command is not None:
            raise PydanticCustomError("haproxy_reload", "pid_file and reload_command exclude each other: choose one")
        return self


class CaddyTargetConfig(_Wire):
    """Load each certificate into a running Caddy through its admin API (``apps/tls/certificates/load_pem``).

    Each certificate is one ``load_pem`` entry with ``@id`` ``certreconcile-<name>`` and the tag
    ``certreconcile:<name>``, replaced in place on rotation; other entries stay untouched. Caddy
    serves it on every server with TLS (``tls_connection_policies``) for the names it holds.
    """

    admin: str = Field(default="http://localhost:2019", pattern=r"^https?://[^\s/?#@]+/?$")
    """Base URL of Caddy's admin API (keep it on loopback: it hands out the loaded keys)."""
    tags: tuple[str, ...] = ()
    """Extra tags on the entry (besides ``certreconcile:<name>``), for ``certificate_selection``."""


class EnvoyTargetConfig(_Wire):
    """File-based SDS for Envoy: ``<sds_dir>/<name>/sds.yaml`` names the secret ``<name>``.

    Each folder is swapped as a whole like a Kubernetes volume: ``..data`` is a symlink to a
    versioned directory, replaced by ``rename(2)``; Envoy watches the folder (``watched_directory``).
    """

    sds_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""


class TraefikTargetConfig(_Wire):
    """Traefik's file provider: ``<dynamic_dir>/certreconcile-<name>.yaml`` lists the certificate
    (``tls.certificates``); its PEM files go to ``<dynamic_dir>/<name>/``.

    Traefik must watch the directory (``providers.file.directory`` with ``watch: true``).
    """

    dynamic_dir: TargetDir = Field(min_length=1)
    """The file provider's directory; a relative path is relative to the desired-state directory."""


_RESERVED_WEBHOOK_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent"}
)


class WebhookTargetConfig(_Wire):
    """HTTPS POST of each certificate, its chain and its private key (JSON) to a receiver.

    The body is signed with HMAC-SHA256 (``X-Certreconcile-Signature``, over the
    ``X-Certreconcile-Timestamp`` value, a dot and the body) under the secret named by
    ``secret_env``, and/or sent with a mutual-TLS client certificate: at least one of the two.
    HTTPS only, redirects are never followed, and link-local and cloud-metadata addresses are
    refused after DNS resolution unless ``allow_link_local``. The receiver must answer 2xx with
    ``{"fingerprint": "<leaf SHA-256, hex>"}``.
    """

    url: str = Field(pattern=r"^https://[^\s/?#@]+(?:[/?#]\S*)?$")
    """The receiver's https:// URL (http:// is refused: the body holds the private key); no user:password@."""
    secret_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the signing secret (never the secret); null: unsigned (mTLS only)."""
    client_cert: FsPath | None = None
    """PEM file of the client certificate for mutual TLS; a relative path is relative to the desired-state directory."""
    client_key: FsPath | None = None
    """PEM file of the client certificate's private key (its path, never its content); with client_cert."""
    ca_bundle: FsPath | None = None
    """PEM file of the CAs trusted for the receiver's TLS; null: the system's trust store."""
    timeout: Duration = "10s"
    """Timeout of each connect, send and read of one delivery."""
    allow_link_local: StrictBool = False
    """Allow link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254). Keep false."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers; not secret (this file is in Git): authenticate with secret_env or mTLS."""

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if not valid:
            raise PydanticCustomError("webhook_url", "url needs a host and a port from 1 to 65535")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: str) -> str:
        if int(value[:-1]) == 0:
            raise PydanticCustomError("webhook_timeout", "timeout must be longer than zero")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, text in value.items():
            lowered = header.lower()
            if not header or any(not (c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")) for c in header):
                raise PydanticCustomError("webhook_header", "{header!r} is not a valid header name", {"header": header})
            if lowered in _RESERVED_WEBHOOK_HEADERS or lowered.startswith("x-certreconcile-"):
                raise PydanticCustomError(
                    "webhook_header_reserved", "the header {header} is set by certreconcile", {"header": header}
                )
            if any(c in text for c in "\r\n\0"):
                raise PydanticCustomError(
                    "webhook_header", "the value of {header} holds a line break", {"header": header}
                )
        return value

    @model_validator(mode="after")
    def _authenticated(self) -> WebhookTargetConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise PydanticCustomError("webhook_client_pair", "client_cert and client_key go together")
        if self.secret_env is None and self.client_cert is None:
            raise PydanticCustomError(
                "webhook_unauthenticated",
                "a webhook needs secret_env (a signed body) or client_cert/client_key (mutual TLS), or both",
            )
        return self


_ACM_NAME_TAG = "certreconcile:name"


class AwsAcmTargetConfig(_Wire):
    """Import each certificate into AWS Certificate Manager; a rotation re-imports onto the same ARN.

    The ACM certificate of a name is found by its tag ``certreconcile:name=<name>`` (set at the
    first import), or pinned with ``certificate_arn``. Credentials come from the usual AWS
    environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, instance roles), never from this file.
    Needs acm:ImportCertificate, ListCertificates, ListTagsForCertificate, AddTagsToCertificate,
    GetCertificate.
    """

    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region; default: from certificate_arn, else ``AWS_REGION``/``AWS_DEFAULT_REGION``."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another ACM endpoint (a VPC endpoint, a test server); default: AWS's own."""
    certificate_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$"
    )
    """Re-import onto this existing ACM certificate (then the target serves ONE certificate name);
    null: the certificate tagged ``certreconcile:name=<name>``, imported anew when there is none."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags set on the ACM certificate (besides ``certreconcile:name``)."""

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not 1 <= len(key) <= 128 or len(text) > 256:
                raise PydanticCustomError(
                    "acm_tag", "tag {key!r}: keys have 1-128 characters, values at most 256", {"key": key}
                )
            if key.lower().startswith("aws:") or key == _ACM_NAME_TAG:
                raise PydanticCustomError("acm_tag_reserved", "the tag key {key} is reserved", {"key": key})
        return value


class Rfc2136Config(_Wire):
    """DNS-01 through RFC 2136 dynamic updates signed with TSIG."""

    server: HostPort
    """The primary name server accepting updates."""
    tsig_key_name: str = Field(min_length=1)
    """Name of the TSIG key."""
    tsig_secret_env: str = Field(pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the base64 TSIG secret (never the secret)."""
    tsig_algorithm: Literal["hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"] = (
        "hmac-sha256"
    )
    """TSIG algorithm."""
    zone: str | None = Field(default=None, min_length=1)
    """The zone to update (e.g. example.com); null: found by SOA queries to the server."""


class Route53Config(_Wire):
    """DNS-01 through AWS Route 53 (``ChangeResourceRecordSets``), waiting for each change to be INSYNC.

    Credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``,
    instance roles), never from this file. Needs route53:ListHostedZonesByName (without
    hosted_zone_id), route53:ListResourceRecordSets, route53:ChangeResourceRecordSets, route53:GetChange.
    """

    hosted_zone_id: str | None = Field(default=None, min_length=1)
    """The hosted zone holding the records (e.g. Z0123456789ABC); null: the closest public zone by name."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region of the API client; default: ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another Route 53 endpoint (a test server); default: AWS's own."""


class CloudflareConfig(_Wire):
    """DNS-01 through the Cloudflare DNS records API (v4), with an API token (Zone.DNS:Edit)."""

    api_token_env: str = Field(default="CLOUDFLARE_API_TOKEN", pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the API token (never the token)."""
    zone_id: str | None = Field(default=None, min_length=1)
    """The zone holding the records; null: found by name (needs Zone.Zone:Read)."""
    api_base: str = Field(default="https://api.cloudflare.com/client/v4", pattern=r"^https?://")
    """Base URL of the API; change it only for a proxy or a test server."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the API's TLS; a relative path is relative to the desired-state directory."""


# ---------------------------------------------------------------- plugin entries


class PluginEntry(_Wire):
    """Base of a mapping holding exactly one kind key (plus the section's common keys)."""

    KINDS: ClassVar[tuple[str, ...]] = ()
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


class KmsEntry(PluginEntry):
    """The KMS wrapping every private key. Exactly one kind key."""

    KINDS: ClassVar[tuple[str, ...]] = ("local", "aws", "vault", "gcp")
    SECTION: ClassVar[str] = "kms"

    local: LocalKmsConfig | None = None
    """Keys wrapped with a local key-encryption key."""
    aws: AwsKmsConfig | None = None
    """Keys wrapped by AWS KMS."""
    vault: VaultKmsConfig | None = None
    """Keys wrapped by the transit engine of Vault or OpenBao."""
    gcp: GcpKmsConfig | None = None
    """Keys wrapped by Google Cloud KMS."""
    cache: KmsCacheConfig | None = None
    """Cache unwrapped data keys in memory, bounded by age and uses; default: no cache."""


class IssuerEntry(PluginEntry):
    """One issuer instance. Exactly one kind key."""

    KINDS: ClassVar[tuple[str, ...]] = ("local_ca", "acme", "vault_pki")
    SECTION: ClassVar[str] = "issuer"

    local_ca: LocalCaConfig | None = None
    """A private CA run by certreconcile."""
    acme: AcmeIssuerConfig | None = None
    """An ACME CA (RFC 8555)."""
    vault_pki: VaultPkiIssuerConfig | None = None
    """A PKI role of Vault or OpenBao."""


class TargetEntry(PluginEntry):
    """One distribution target. Exactly one kind key, plus ``verify``."""

    KINDS: ClassVar[tuple[str, ...]] = ("files", "webhook", "aws_acm", "caddy", "envoy", "traefik", "nginx", "haproxy")
    SECTION: ClassVar[str] = "target"

    files: FilesTargetConfig | None = None
    """Plain PEM files in a directory."""
    webhook: WebhookTargetConfig | None = None
    """An HTTPS receiver, sent a signed JSON body."""
    aws_acm: AwsAcmTargetConfig | None = None
    """AWS Certificate Manager (import, re-import onto the same ARN)."""
    caddy: CaddyTargetConfig | None = None
    """A running Caddy, through its admin API."""
    envoy: EnvoyTargetConfig | None = None
    """Envoy's file-based SDS (a watched directory)."""
    traefik: TraefikTargetConfig | None = None
    """Traefik's file provider (a watched directory)."""
    nginx: NginxTargetConfig | None = None
    """nginx: PEM files, ``nginx -t`` (rolled back on failure), then a graceful reload."""
    haproxy: HaproxyTargetConfig | None = None
    """HAProxy: PEM files, then its runtime API (no reload) or a reload."""
    verify: HostPort | None = None
    """HOST:PORT to verify by TLS handshake after deployment (SNI: each name of the certificate);
    null: the target's own read-back, if it has one."""
    sni: str | None = Field(default=None, min_length=1)
    """Server name to send in every verification handshake instead of the certificate's names."""
    verify_timeout: Duration = "30s"
    """How long to retry verification (reloads are asynchronous) before the deployment counts as failed."""


class DnsProviderEntry(PluginEntry):
    """One DNS provider for DNS-01 challenges. Exactly one kind key, plus the propagation settings."""

    KINDS: ClassVar[tuple[str, ...]] = ("rfc2136", "route53", "cloudflare")
    SECTION: ClassVar[str] = "dns provider"

    rfc2136: Rfc2136Config | None = None
    """RFC 2136 dynamic updates with TSIG."""
    route53: Route53Config | None = None
    """AWS Route 53."""
    cloudflare: CloudflareConfig | None = None
    """Cloudflare DNS."""
    propagation_timeout: Duration = "120s"
    """How long to wait for every authoritative name server to answer a new TXT value."""
    nameservers: tuple[HostPort, ...] | None = None
    """HOST:PORT of the name servers to check; null: the zone's NS records, each on port 53
    (route53: null skips this check, the change being INSYNC is enough)."""


# ---------------------------------------------------------------- policy and certificates


class PolicyDocument(_Wire):
    """Rules every certificate must satisfy."""

    allowed_domains: tuple[str, ...] = ()
    """Names (``example.com``) and wildcard patterns (``*.example.com``: any name below it); empty: any."""


class CertificateDocument(_Wire):
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
    """Names of declared targets to deploy to."""
    on_delete: OnDelete = OnDelete.RETIRE
    """What removing this declaration does: retire (stop managing) or revoke."""


# pydantic checks the pattern of dict keys but does not put it in the JSON Schema.
_NAMED_KEYS: dict[str, Any] = {"propertyNames": {"pattern": CERT_NAME_PATTERN}}


class DesiredDocument(_Wire):
    """One desired-state file. Every key is optional: the files of a directory are merged."""

    kms: KmsEntry | None = None
    """At most one file may declare it; default: ``{local: {}}``."""
    issuers: dict[Name, IssuerEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Issuer instances by name."""
    dns_providers: dict[Name, DnsProviderEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """DNS providers by name."""
    targets: dict[Name, TargetEntry] = Field(default_factory=dict, json_schema_extra=_NAMED_KEYS)
    """Targets by name."""
    policy: PolicyDocument | None = None
    """At most one file may declare it."""
    certificates: tuple[CertificateDocument, ...] = ()
    """Managed certificates; names are unique across all files."""

"""How to reach and log in to Vault/OpenBao: the settings shared by the ``vault`` KMS and the ``vault_pki`` issuer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    FsPath,
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.plugins.registry import PluginContext
    from certreconcile.plugins.vault_auth import VaultLogin


__all__ = ["VaultConnectionConfig", "vault_login"]

class VaultConnectionConfig(Wire):
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

    def unused_env_fields(self) -> frozenset[str]:
        """The ``*_env`` fields its login method does not read (the AppRole ids, unless auth: approle)."""
        return frozenset() if self.auth == "approle" else frozenset({"role_id_env", "secret_id_env"})



def vault_login(config: VaultConnectionConfig, context: PluginContext) -> VaultLogin:
    from certreconcile.plugins.paths import declared_path
    from certreconcile.plugins.vault_auth import VaultLogin

    return VaultLogin(
        method=config.auth,
        role_id_env=config.role_id_env,
        secret_id_env=config.secret_id_env,
        kubernetes_role=config.kubernetes_role,
        kubernetes_mount=config.kubernetes_mount,
        kubernetes_token_path=declared_path(config.kubernetes_token_path, context.desired_dir),
    )

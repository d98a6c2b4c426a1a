"""The ``vault`` KMS kind (transit): its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.kms.vault`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.plugins.vault_config import VaultConnectionConfig, vault_login

if TYPE_CHECKING:
    from certreconcile.desired.model import KmsSpec
    from certreconcile.plugins.ports import Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create", "declared_key_id"]

SUMMARY = 'Keys wrapped by the transit engine of Vault or OpenBao.'

class VaultKmsConfig(VaultConnectionConfig):
    """Vault or OpenBao transit: a data key per private key, bound to its row as associated data."""

    mount: str = Field(default="transit", min_length=1)
    """Mount path of the transit secrets engine."""
    key: str = Field(min_length=1)
    """Name of the transit key (type aes256-gcm96) wrapping the data keys."""


Config = VaultKmsConfig


def create(spec: KmsSpec, context: PluginContext) -> Kms:
    """No I/O and no credentials needed here: hvac logs in at the first wrap or unwrap."""
    from certreconcile.plugins.kms.vault import VaultKms
    from certreconcile.plugins.paths import optional_declared_path

    assert isinstance(spec.config, VaultKmsConfig)
    config = spec.config
    login = vault_login(config, context)
    return VaultKms(
        url=config.url,
        key=config.key,
        mount=config.mount,
        auth=login.method,
        role_id_env=login.role_id_env,
        secret_id_env=login.secret_id_env,
        kubernetes_role=login.kubernetes_role,
        kubernetes_mount=login.kubernetes_mount,
        kubernetes_token_path=login.kubernetes_token_path,
        namespace=config.namespace,
        ca_bundle=optional_declared_path(config.ca_bundle, context.desired_dir),
        env=context.env,
    )


def declared_key_id(config: VaultKmsConfig, context: PluginContext) -> str | None:
    return f"{config.mount.strip('/')}/{config.key}"

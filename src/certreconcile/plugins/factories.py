"""Factories of the built-in plug-ins: typed config in, adapter out."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from certreconcile.actual.store import StateStore
from certreconcile.desired.documents import (
    AcmeIssuerConfig,
    AwsKmsConfig,
    FilesTargetConfig,
    GcpKmsConfig,
    LocalCaConfig,
    LocalKmsConfig,
    VaultConnectionConfig,
    VaultKmsConfig,
    VaultPkiIssuerConfig,
)
from certreconcile.desired.model import IssuerSpec, KmsSpec, TargetSpec
from certreconcile.domain.durations import parse_duration
from certreconcile.plugins.issuers.local_ca import LocalCaIssuer
from certreconcile.plugins.kms.aws import AwsKms
from certreconcile.plugins.kms.gcp import GcpKms
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.kms.vault import VaultKms
from certreconcile.plugins.paths import declared_path, optional_declared_path
from certreconcile.plugins.ports import Http01Solver, Issuer, Kms, Target
from certreconcile.plugins.registry import PluginContext
from certreconcile.plugins.targets.files import FilesTarget
from certreconcile.plugins.vault_auth import VaultLogin

__all__ = [
    "create_acme_issuer",
    "create_aws_acm_target",
    "create_aws_kms",
    "create_caddy_target",
    "create_envoy_target",
    "create_files_target",
    "create_gcp_kms",
    "create_haproxy_target",
    "create_local_ca",
    "create_local_kms",
    "create_nginx_target",
    "create_traefik_target",
    "create_vault_kms",
    "create_vault_pki",
    "create_webhook_target",
    "local_kms_key_file",
]


def local_kms_key_file(config: LocalKmsConfig | None, context: PluginContext) -> Path:
    """CERTRECONCILE_LOCAL_KMS_KEY_FILE, else the declared key_file, else ``<data dir>/local-kms.key``."""
    from_env = context.env.get("CERTRECONCILE_LOCAL_KMS_KEY_FILE")
    if from_env:
        return Path(from_env)
    if config is not None and config.key_file:
        return declared_path(config.key_file, context.desired_dir)
    return context.data_dir / "local-kms.key"


def create_local_kms(spec: KmsSpec, context: PluginContext) -> LocalKms:
    config = spec.config if isinstance(spec.config, LocalKmsConfig) else None
    return LocalKms(local_kms_key_file(config, context))


def create_aws_kms(spec: KmsSpec, context: PluginContext) -> AwsKms:
    """No I/O and no credentials needed here: boto3 is loaded at the first wrap or unwrap."""
    assert isinstance(spec.config, AwsKmsConfig)
    config = spec.config
    return AwsKms(config.key_id, region=config.region, endpoint_url=config.endpoint_url, env=context.env)


def _declared_path(value: str | None, context: PluginContext) -> Path | None:
    """A path from a declaration: relative paths are relative to the desired-state directory."""
    return optional_declared_path(value, context.desired_dir)


class _Verification(TypedDict):
    """How every target is verified after a deployment (the target's common settings)."""

    verify: str | None
    verify_timeout: timedelta
    sni: str | None


def _verification(spec: TargetSpec) -> _Verification:
    return _Verification(verify=spec.verify, verify_timeout=spec.verify_timeout, sni=spec.sni)


def create_vault_kms(spec: KmsSpec, context: PluginContext) -> VaultKms:
    """No I/O and no credentials needed here: hvac logs in at the first wrap or unwrap."""
    assert isinstance(spec.config, VaultKmsConfig)
    config = spec.config
    login = _vault_login(config, context)
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
        ca_bundle=_declared_path(config.ca_bundle, context),
        env=context.env,
    )


def _vault_login(config: VaultConnectionConfig, context: PluginContext) -> VaultLogin:
    token_path = _declared_path(config.kubernetes_token_path, context)
    assert token_path is not None
    return VaultLogin(
        method=config.auth,
        role_id_env=config.role_id_env,
        secret_id_env=config.secret_id_env,
        kubernetes_role=config.kubernetes_role,
        kubernetes_mount=config.kubernetes_mount,
        kubernetes_token_path=token_path,
    )


def create_vault_pki(spec: IssuerSpec, context: PluginContext, store: StateStore, kms: Kms) -> Issuer:
    """No I/O and no credentials needed here: hvac logs in at the first signature."""
    from certreconcile.plugins.issuers.vault_pki import VaultPkiIssuer

    assert isinstance(spec.config, VaultPkiIssuerConfig)
    config = spec.config
    return VaultPkiIssuer(
        spec.name,
        url=config.url,
        role=config.role,
        login=_vault_login(config, context),
        mount=config.mount,
        ttl=parse_duration(config.ttl) if config.ttl is not None else None,
        namespace=config.namespace,
        ca_bundle=_declared_path(config.ca_bundle, context),
        env=context.env,
    )


def create_gcp_kms(spec: KmsSpec, context: PluginContext) -> GcpKms:
    """No I/O and no credentials needed here: httpx and the access token are loaded at the first wrap or unwrap."""
    assert isinstance(spec.config, GcpKmsConfig)
    config = spec.config
    ca_bundle = _declared_path(config.ca_bundle, context)
    return GcpKms(config.key_name, endpoint=config.endpoint, ca_bundle=ca_bundle, env=context.env)


def create_local_ca(spec: IssuerSpec, context: PluginContext, store: StateStore, kms: Kms) -> LocalCaIssuer:
    assert isinstance(spec.config, LocalCaConfig)
    return LocalCaIssuer(spec.name, spec.config, store, kms)


def create_acme_issuer(spec: IssuerSpec, context: PluginContext, store: StateStore, kms: Kms) -> Issuer:
    """No I/O here: the directory is read and the account registered at the first order."""
    from certreconcile.plugins.issuers.acme.issuer import AcmeIssuer
    from certreconcile.plugins.issuers.acme.solvers import StandaloneHttp01Solver, WebrootHttp01Solver

    assert isinstance(spec.config, AcmeIssuerConfig)
    config = spec.config
    http01: Http01Solver
    if config.http01.webroot is not None:
        root = _declared_path(config.http01.webroot.path, context)
        assert root is not None
        http01 = WebrootHttp01Solver(root)
    else:
        assert config.http01.standalone is not None
        host, _, port = config.http01.standalone.listen.rpartition(":")
        http01 = StandaloneHttp01Solver(host.strip("[]"), int(port))
    ca_bundle = _declared_path(config.ca_bundle, context)
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


def create_files_target(spec: TargetSpec, context: PluginContext) -> FilesTarget:
    assert isinstance(spec.config, FilesTargetConfig)
    return FilesTarget(
        spec.name,
        spec.config,
        context.desired_dir,
        **_verification(spec),
    )


def create_caddy_target(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: Caddy's admin API is first asked at the first deployment or read-back."""
    from certreconcile.desired.documents import CaddyTargetConfig
    from certreconcile.plugins.targets.caddy import CaddyTarget

    assert isinstance(spec.config, CaddyTargetConfig)
    return CaddyTarget(spec.name, spec.config, **_verification(spec))


def create_envoy_target(spec: TargetSpec, context: PluginContext) -> Target:
    from certreconcile.desired.documents import EnvoyTargetConfig
    from certreconcile.plugins.targets.envoy import EnvoyTarget

    assert isinstance(spec.config, EnvoyTargetConfig)
    return EnvoyTarget(
        spec.name,
        spec.config,
        context.desired_dir,
        **_verification(spec),
    )


def create_traefik_target(spec: TargetSpec, context: PluginContext) -> Target:
    from certreconcile.desired.documents import TraefikTargetConfig
    from certreconcile.plugins.targets.traefik import TraefikTarget

    assert isinstance(spec.config, TraefikTargetConfig)
    return TraefikTarget(
        spec.name,
        spec.config,
        context.desired_dir,
        **_verification(spec),
    )


def create_webhook_target(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the secret is read, the host resolved and checked at each delivery."""
    from certreconcile.desired.documents import WebhookTargetConfig
    from certreconcile.plugins.targets.webhook import WebhookTarget

    assert isinstance(spec.config, WebhookTargetConfig)
    return WebhookTarget(
        spec.name,
        spec.config,
        env=context.env,
        base_dir=context.desired_dir,
        **_verification(spec),
        timeout=parse_duration(spec.config.timeout),
    )


def create_aws_acm_target(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O and no credentials needed here: boto3 is loaded at the first import or read-back."""
    from certreconcile.desired.documents import AwsAcmTargetConfig
    from certreconcile.plugins.targets.aws_acm import AwsAcmTarget

    assert isinstance(spec.config, AwsAcmTargetConfig)
    return AwsAcmTarget(
        spec.name,
        spec.config,
        env=context.env,
        **_verification(spec),
    )


def create_nginx_target(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: nginx is tested and reloaded at each deployment."""
    from certreconcile.desired.documents import NginxTargetConfig
    from certreconcile.plugins.targets.nginx import NginxTarget

    assert isinstance(spec.config, NginxTargetConfig)
    return NginxTarget(
        spec.name,
        spec.config,
        context.desired_dir,
        **_verification(spec),
    )


def create_haproxy_target(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: HAProxy's runtime API is first asked at the first deployment or read-back."""
    from certreconcile.desired.documents import HaproxyTargetConfig
    from certreconcile.plugins.targets.haproxy import HaproxyTarget

    assert isinstance(spec.config, HaproxyTargetConfig)
    return HaproxyTarget(
        spec.name,
        spec.config,
        context.desired_dir,
        **_verification(spec),
    )

"""Private keys sealed by a cloud KMS (AWS KMS on moto, Vault transit on OpenBao, the Cloud KMS
test server of ``tests/gcp_kms_server.py``), end to end.

For each backend: apply into PostgreSQL, then ``pg_dump`` holds no ``PRIVATE KEY`` and no data
key; a redistribution to a new target decrypts the stored keys; and ``plan`` runs with no KMS
credentials and without being able to import the SDKs at all (it never decrypts).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from certreconcile.actual.embedded import postgres_bin_dir
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import apply_plan, certificate_context
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import parse_envelope
from certreconcile.plan import Action
from certreconcile.plugins.ports import WrappedKey
from certreconcile.wiring import Settings, build_environment
from e2e.conftest import Runner
from engine import T0, cert, desired_doc, load, plan_now
from gcp_kms_server import GcpKmsServer
from kms_servers import BaoTransit, MotoKms

pytestmark = pytest.mark.integration

TARGETS = {"deploy": {"files": {"dir": "out/deploy"}}, "extra": {"files": {"dir": "out/extra"}}}
SDKS = ("boto3", "botocore", "hvac", "httpx")


@dataclasses.dataclass(frozen=True)
class CloudKms:
    kind: str
    config: dict[str, Any]
    env: dict[str, str]  # the credentials apply needs

    def doc(self, certificates: list[dict[str, Any]]) -> dict[str, Any]:
        return {**desired_doc(certificates, targets=TARGETS), "kms": {self.kind: self.config}}


@pytest.fixture(params=["aws", "vault", "gcp"])
def cloud(request: pytest.FixtureRequest) -> CloudKms:
    if request.param == "aws":
        moto: MotoKms = request.getfixturevalue("moto_kms")
        return CloudKms(
            "aws", {"key_id": moto.key_arn, "region": moto.region, "endpoint_url": moto.endpoint_url}, moto.env
        )
    if request.param == "gcp":
        gcp: GcpKmsServer = request.getfixturevalue("gcp_kms")
        return CloudKms(
            "gcp", {"key_name": gcp.create_key(), "endpoint": gcp.url}, {"GOOGLE_OAUTH_ACCESS_TOKEN": gcp.token}
        )
    bao: BaoTransit = request.getfixturevalue("bao_transit")
    return CloudKms(
        "vault",
        {"url": bao.url, "mount": bao.mount, "key": bao.key, "auth": "approle"},
        {"VAULT_ROLE_ID": bao.role_id, "VAULT_SECRET_ID": bao.secret_id},
    )


def _settings(directory: Path, env: dict[str, str]) -> Settings:
    return Settings(
        desired_dir=directory.resolve(),
        data_dir=directory.resolve() / ".certreconcile",
        database_url=None,
        env={**env, "USER": "tester"},
    )


def _secret_forms(secret: bytes) -> list[bytes]:
    return [secret, base64.b64encode(secret), secret.hex().encode()]


def test_apply_dump_and_redistribution(
    cloud: CloudKms, tmp_path: Path, postgres_store: PostgresStore, database_url: str
) -> None:
    clock = FixedClock(T0)
    settings = _settings(tmp_path, cloud.env)
    desired = load(tmp_path, cloud.doc([cert("a"), cert("b", key="rsa-2048")]))
    environment = build_environment(desired, settings, postgres_store, clock)
    result = apply_plan(plan_now(desired, postgres_store, clock), desired, environment)
    assert result.ok, result.failures
    assert not (settings.data_dir / "local-kms.key").exists()  # no local key was involved

    deks: list[bytes] = []
    with postgres_store.session() as session:
        ids = {name: c.id for name, c in session.load_actual().certificates.items()}
        for cert_id in ids.values():
            envelope = parse_envelope(session.key_ref(cert_id))
            assert envelope["kms"] == cloud.kind
            wrapped = WrappedKey(str(envelope["key_id"]), base64.b64decode(str(envelope["wrapped_dek"])))
            deks.append(environment.kms.decrypt_data_key(wrapped, certificate_context(cert_id)).reveal())
    assert len(deks) == 2

    pg_dump = postgres_bin_dir() / "pg_dump"
    dump = subprocess.run([str(pg_dump), "--dbname", database_url], capture_output=True, check=True).stdout
    assert b"PRIVATE KEY" not in dump
    for dek in deks:
        for form in _secret_forms(dek):
            assert form not in dump

    # Both certificates gain a target: a redistribution, which must unwrap the stored keys.
    more = load(
        tmp_path,
        cloud.doc([cert("a", targets=["deploy", "extra"]), cert("b", key="rsa-2048", targets=["deploy", "extra"])]),
    )
    plan = plan_now(more, postgres_store, clock)
    assert [(c.action, c.name) for c in plan.changes] == [(Action.REDISTRIBUTE, "a"), (Action.REDISTRIBUTE, "b")]
    result = apply_plan(plan, more, build_environment(more, settings, postgres_store, clock))
    assert result.ok, result.failures
    for name in ("a", "b"):
        key = (tmp_path / "out" / "extra" / name / "privkey.pem").read_bytes()
        assert b"PRIVATE KEY" in key
        assert key == (tmp_path / "out" / "deploy" / name / "privkey.pem").read_bytes()


def test_plan_needs_no_kms_credentials_nor_sdk(
    cloud: CloudKms, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "certs.yaml").write_text(yaml.safe_dump(cloud.doc([cert("a")]), sort_keys=False))
    run_cli("apply", "--dir", str(desired), "--auto-approve", env={**cli_env, **cloud.env}, check_code=0)
    (desired / "certs.yaml").write_text(yaml.safe_dump(cloud.doc([cert("a"), cert("extra")]), sort_keys=False))

    # No credentials at all, and SDKs that refuse to be imported: plan must not need either.
    poison = tmp_path / "poison"
    for sdk in SDKS:
        (poison / sdk).mkdir(parents=True)
        (poison / sdk / "__init__.py").write_text(f"raise ImportError('plan must not import {sdk}')\n")
    env = {k: v for k, v in cli_env.items() if not k.startswith(("AWS_", "VAULT_", "BAO_", "GOOGLE_", "GCE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(poison), env.get("PYTHONPATH")]))
    result = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env, check_code=2)
    assert "+ issue extra" in result.stdout
    assert "Traceback" not in result.stderr
    # ... while apply does need them: one clear line, no traceback.
    refused = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=1)
    assert "Traceback" not in refused.stderr + refused.stdout
    assert "kms-sdk-missing" in refused.stderr + refused.stdout  # the poisoned SDK, not a crash
    shutil.rmtree(poison)

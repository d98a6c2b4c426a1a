"""Every KMS adapter and the fake pass the same contract (``certreconcile.testing.kms_contract``).

local: a key file in a temp dir; aws: ``moto_server``; vault: ``bao server -dev`` (OpenBao);
gcp: the Cloud KMS test server of ``tests/gcp_kms_server.py`` (more in ``test_kms_gcp.py``);
fake: :class:`~certreconcile.testing.fake_kms.FakeKms`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from certreconcile.errors import KmsError
from certreconcile.plugins.kms.aws import AwsKms
from certreconcile.plugins.kms.gcp import GcpKms
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.kms.vault import VaultKms
from certreconcile.plugins.ports import EncryptionContext, Kms
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.kms_contract import (
    CHECKS,
    WRAP_CHECKS,
    KmsFactory,
    check_round_trip,
    check_unreachable,
)
from gcp_kms_server import GcpKmsServer
from kms_servers import BaoTransit, MotoKms

BACKENDS = ["local", "fake", "aws", "vault", "gcp"]


def _aws(server: MotoKms) -> KmsFactory:
    return lambda: AwsKms(server.key_arn, endpoint_url=server.endpoint_url, env=server.env)


def _vault(server: BaoTransit, **extra: str) -> KmsFactory:
    env = extra or {"VAULT_TOKEN": server.root_token}
    return lambda: VaultKms(url=server.url, key=server.key, mount=server.mount, env=env)


def _gcp(server: GcpKmsServer) -> KmsFactory:
    key_name = server.create_key()  # one CryptoKey per test
    return lambda: GcpKms(key_name, endpoint=server.url, env={"GOOGLE_OAUTH_ACCESS_TOKEN": server.token})


@pytest.fixture(params=BACKENDS)
def make_kms(request: pytest.FixtureRequest, tmp_path: Path) -> KmsFactory:
    match request.param:
        case "local":
            return lambda: LocalKms(tmp_path / "local.key")
        case "fake":
            fake = FakeKms()
            return lambda: fake  # its memory is the KMS: one instance per test
        case "aws":
            return _aws(request.getfixturevalue("moto_kms"))
        case "vault":
            return _vault(request.getfixturevalue("bao_transit"))
        case "gcp":
            return _gcp(request.getfixturevalue("gcp_kms"))
    raise AssertionError(request.param)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_kms_contract(make_kms: KmsFactory, check: Callable[[KmsFactory], None]) -> None:
    check(make_kms)


@pytest.mark.parametrize("check", WRAP_CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_kms_wrap_contract(make_kms: KmsFactory, check: Callable[[KmsFactory], None]) -> None:
    check(make_kms)


# ---------------------------------------------------------------- unreachable servers

AWS_SECRET = "unreachable-secret-" + "x" * 20
VAULT_TOKEN = "unreachable-token-0123456789"


def test_unreachable_aws(closed_port: int) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAUNREACHABLE", "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    check_unreachable(
        lambda: AwsKms(
            "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-0000-0000-000000000000",
            endpoint_url=f"http://127.0.0.1:{closed_port}",
            env=env,
            max_attempts=1,
        ),
        secrets=[AWS_SECRET, "AKIAUNREACHABLE"],
    )


def test_unreachable_vault(closed_port: int) -> None:
    check_unreachable(
        lambda: VaultKms(url=f"http://127.0.0.1:{closed_port}", key="certreconcile", env={"VAULT_TOKEN": VAULT_TOKEN}),
        secrets=[VAULT_TOKEN],
    )


def test_unreachable_gcp(closed_port: int) -> None:
    token = "ya29.unreachable-" + "t" * 20
    check_unreachable(
        lambda: GcpKms(
            "projects/p/locations/global/keyRings/r/cryptoKeys/k",
            endpoint=f"http://127.0.0.1:{closed_port}",
            env={"GOOGLE_OAUTH_ACCESS_TOKEN": token},
        ),
        secrets=[token],
    )


def test_unreachable_fake() -> None:
    check_unreachable(lambda: FakeKms(available=False))


# ---------------------------------------------------------------- backend specifics

CONTEXT = EncryptionContext(table="certificate", row_id="row-1")


def test_aws_and_vault_adapters_need_no_sdk_until_used() -> None:
    """Building the adapters imports no SDK and reads no credentials (``plan`` builds none anyway)."""
    code = (
        "import sys\n"
        "from certreconcile.plugins.kms.aws import AwsKms\n"
        "from certreconcile.plugins.kms.vault import VaultKms\n"
        "from certreconcile.plugins.kms.gcp import GcpKms\n"
        "import certreconcile.plugins.factories\n"
        "kms = [AwsKms('alias/none', region='eu-west-1', env={}),\n"
        "       VaultKms(url='http://127.0.0.1:1', key='k', env={}),\n"
        "       GcpKms('projects/p/locations/l/keyRings/r/cryptoKeys/k', env={})]\n"
        "assert [k.name for k in kms] == ['aws', 'vault', 'gcp']\n"
        "loaded = {'boto3', 'botocore', 'hvac', 'requests', 'httpx'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_aws_missing_key(moto_kms: MotoKms) -> None:
    kms = AwsKms(
        moto_kms.key_arn.replace(moto_kms.key_arn.rsplit("/", 1)[1], "0" * 8 + "-0000-0000-0000-" + "0" * 12),
        endpoint_url=moto_kms.endpoint_url,
        env=moto_kms.env,
    )
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-key-not-found"
    assert moto_kms.secret_access_key not in caught.value.one_line()


def test_aws_without_credentials(moto_kms: MotoKms, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    kms = AwsKms(moto_kms.key_arn, endpoint_url=moto_kms.endpoint_url, env={})
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-credentials-missing"


def test_aws_decrypt_with_another_key_fails(moto_kms: MotoKms) -> None:
    import boto3

    client = boto3.client(
        "kms",
        endpoint_url=moto_kms.endpoint_url,
        region_name=moto_kms.region,
        aws_access_key_id=moto_kms.access_key_id,
        aws_secret_access_key=moto_kms.secret_access_key,
    )
    other_arn = client.create_key(Description="another key")["KeyMetadata"]["Arn"]
    first = AwsKms(moto_kms.key_arn, endpoint_url=moto_kms.endpoint_url, env=moto_kms.env)
    _, wrapped = first.generate_data_key(CONTEXT)
    assert wrapped.key_id == moto_kms.key_arn
    with pytest.raises(KmsError) as caught:
        first.decrypt_data_key(replace(wrapped, key_id=other_arn), CONTEXT)
    # AWS answers IncorrectKeyException (kms-wrong-master-key), moto AccessDeniedException.
    assert caught.value.code in {"kms-wrong-master-key", "kms-access-denied"}


def test_vault_approle_login(bao_transit: BaoTransit) -> None:
    env = {"CR_ROLE": bao_transit.role_id, "CR_SECRET": bao_transit.secret_id}

    def make() -> Kms:
        return VaultKms(
            url=bao_transit.url,
            key=bao_transit.key,
            auth="approle",
            role_id_env="CR_ROLE",
            secret_id_env="CR_SECRET",
            env=env,
        )

    check_round_trip(make)


def test_vault_without_token(bao_transit: BaoTransit) -> None:
    kms = VaultKms(url=bao_transit.url, key=bao_transit.key, env={})
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-credentials-missing"


def test_vault_bad_token_is_access_denied(bao_transit: BaoTransit) -> None:
    token = "not-a-valid-token-" + "z" * 10
    kms = VaultKms(url=bao_transit.url, key=bao_transit.key, env={"BAO_TOKEN": token})
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-access-denied"
    assert token not in caught.value.one_line()


def test_vault_missing_key(bao_transit: BaoTransit) -> None:
    kms = VaultKms(url=bao_transit.url, key="no-such-key", env={"VAULT_TOKEN": bao_transit.root_token})
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-key-not-found"
    assert bao_transit.root_token not in caught.value.one_line()

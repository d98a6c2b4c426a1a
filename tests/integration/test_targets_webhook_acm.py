"""The webhook target against a real mutual-TLS HTTPS receiver; aws_acm against moto's server."""

from __future__ import annotations

import datetime
import json
import logging
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.domain.certs import read_cert_facts
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle, SecretBytes
from certreconcile.plugins.targets import webhook as webhook_module
from certreconcile.plugins.targets.aws_acm import NAME_TAG, AwsAcmTarget
from certreconcile.plugins.targets.aws_acm_config import AwsAcmTargetConfig
from certreconcile.plugins.targets.webhook import WebhookTarget
from certreconcile.plugins.targets.webhook_config import WebhookTargetConfig
from certreconcile.testing.target_contract import CHECKS, bundle_maker, check_errors_hold_no_key
from kms_servers import MotoKms
from webhook_servers import (
    CLIENT_COMMON_NAME,
    ClientIdentity,
    WebhookServer,
    make_client_identity,
    running_webhook_server,
    signature_valid,
)

pytestmark = pytest.mark.integration

SECRET = "hook-secret-" + secrets.token_hex(8)


def make_bundle(name: str, *domains: str) -> DeployBundle:
    """A CA-signed ECDSA leaf for ``domains``, with its chain and key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {secrets.token_hex(4)}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return DeployBundle(
        name=name,
        domains=domains,
        cert_pem=cert_pem,
        chain_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=SecretBytes(key_pem),
        fingerprint=read_cert_facts(cert_pem).fingerprint,
    )


def key_fragments(bundle: DeployBundle) -> list[str]:
    """The key's PEM and its base64 body: neither may appear anywhere."""
    pem = bundle.key_pem.reveal().decode()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [pem.strip(), body, body[:40], body[-40:]]


def chain_texts(exc: BaseException) -> str:
    """str and repr of an exception and of everything it was raised from or during."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), *(str(arg) for arg in seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def assert_no_key(exc: BaseException, bundle: DeployBundle) -> None:
    text = chain_texts(exc)
    assert "\n" not in str(exc)
    for fragment in key_fragments(bundle):
        assert fragment not in text


# ---------------------------------------------------------------- webhook


@pytest.fixture
def client_identity(tmp_path: Path) -> ClientIdentity:
    return make_client_identity(tmp_path / "client")


@pytest.fixture
def receiver(tmp_path: Path, client_identity: ClientIdentity) -> Iterator[WebhookServer]:
    with running_webhook_server(tmp_path / "receiver", client_identity) as server:
        yield server


def webhook(
    url: str,
    tmp_path: Path,
    client: ClientIdentity | None,
    ca: Path | None,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> WebhookTarget:
    fields: dict[str, Any] = {"url": url, "secret_env": "HOOK_SECRET", "ca_bundle": str(ca) if ca else None}
    if client is not None:
        fields |= {"client_cert": str(client.cert), "client_key": str(client.key)}
    fields |= extra.pop("config", {})
    config = WebhookTargetConfig.model_validate(fields)
    return WebhookTarget(
        "hook",
        config,
        env={"HOOK_SECRET": SECRET} if env is None else env,
        base_dir=tmp_path,
        timeout=timedelta(seconds=5),
        **extra,
    )


def test_deploy_posts_a_signed_body_over_mutual_tls(
    receiver: WebhookServer, client_identity: ClientIdentity, tmp_path: Path
) -> None:
    bundle = make_bundle("shop", "shop.example.com", "www.shop.example.com")
    target = webhook(
        receiver.url("/hooks/certs?tenant=a"), tmp_path, client_identity, receiver.ca,
        config={"headers": {"X-Tenant": "a"}},
    )  # fmt: skip

    target.deploy(bundle)
    target.deploy(bundle)  # idempotent: the receiver gets the same certificate again

    assert len(receiver.received) == 2
    got = receiver.received[0]
    assert got.path == "/hooks/certs?tenant=a"
    assert got.client_common_name == CLIENT_COMMON_NAME  # the server saw the client certificate
    assert signature_valid(got, SECRET)
    assert not signature_valid(got, SECRET + "x")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert got.headers["x-tenant"] == "a"
    assert got.json() == {
        "name": "shop",
        "domains": ["shop.example.com", "www.shop.example.com"],
        "fingerprint": bundle.fingerprint,
        "certificate": bundle.cert_pem,
        "chain": bundle.chain_pem,
        "private_key": bundle.key_pem.reveal().decode(),
    }
    seen = target.observe("shop", bundle.domains)
    assert seen.unknown and seen.fingerprint is None


def test_host_name_is_pinned_to_the_checked_address_and_keeps_its_sni(
    receiver: WebhookServer, client_identity: ClientIdentity, tmp_path: Path
) -> None:
    """``localhost`` resolves once; the connection goes to that address, TLS is checked for ``localhost``."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    bundle = make_bundle("api", "api.example.com")
    target = webhook(receiver.url(host="localhost"), tmp_path, client_identity, receiver.ca, resolve=resolve)
    target.deploy(bundle)
    assert asked == ["localhost"]
    assert receiver.received[0].headers["host"] == f"localhost:{receiver.port}"
    # The certificate is checked against the URL's name, not the address connected to (which it also holds).
    other = webhook(receiver.url(host="other.example.test"), tmp_path, client_identity, receiver.ca, resolve=resolve)
    with pytest.raises(TargetError, match=r"other\.example\.test") as caught:
        other.deploy(bundle)
    assert caught.value.code == "target-unreachable" and "certificate verify failed" in str(caught.value).lower()
    assert len(receiver.received) == 1


def test_a_name_resolving_to_a_metadata_address_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: whatever the name, the resolved addresses decide, and all of them are checked."""

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("no connection may be attempted")

    monkeypatch.setattr(webhook_module.httpx, "Client", no_client)
    resolved = ["127.0.0.1", "169.254.169.254"]
    target = webhook("https://hooks.example.test/x", tmp_path, None, None, resolve=lambda host, port: resolved)
    with pytest.raises(TargetError) as caught:
        target.deploy(make_bundle("a", "a.example.com"))
    assert caught.value.code == "target-address-refused"
    assert "hooks.example.test (169.254.169.254): a cloud metadata address" in str(caught.value)


def test_wrong_fingerprint_in_the_answer_fails(
    receiver: WebhookServer, client_identity: ClientIdentity, tmp_path: Path
) -> None:
    receiver.mode = "wrong"
    bundle = make_bundle("shop", "shop.example.com")
    with pytest.raises(TargetError) as caught:
        webhook(receiver.url(), tmp_path, client_identity, receiver.ca).deploy(bundle)
    assert caught.value.code == "target-unconfirmed"
    assert "confirmed abababababababab instead of" in str(caught.value)
    assert_no_key(caught.value, bundle)


def test_redirect_is_refused_and_never_followed(
    receiver: WebhookServer, client_identity: ClientIdentity, tmp_path: Path
) -> None:
    with running_webhook_server(tmp_path / "elsewhere", client_identity) as elsewhere:
        receiver.mode = "redirect"
        receiver.redirect_to = elsewhere.url("/stolen")
        bundle = make_bundle("shop", "shop.example.com")
        with pytest.raises(TargetError) as caught:
            webhook(receiver.url(), tmp_path, client_identity, receiver.ca).deploy(bundle)
        assert caught.value.code == "target-redirect-refused"
        assert "answered 302" in str(caught.value)
        assert len(receiver.received) == 1
        assert elsewhere.received == []  # the redirect target was never contacted
        assert_no_key(caught.value, bundle)


def test_metadata_literal_address_is_refused_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("no connection may be attempted")

    monkeypatch.setattr(webhook_module.httpx, "Client", no_client)
    bundle = make_bundle("shop", "shop.example.com")
    for url in ("https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/", "https://[::ffff:a9fe:a9fe]/"):
        with pytest.raises(TargetError) as caught:
            webhook(url, tmp_path, None, None).deploy(bundle)
        assert caught.value.code == "target-address-refused", url
        assert_no_key(caught.value, bundle)
    with pytest.raises(TargetError) as caught:
        webhook("https://169.254.10.20:8443/", tmp_path, None, None).deploy(bundle)
    assert "a link-local address" in str(caught.value)


def test_plain_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="url"):
        WebhookTargetConfig.model_validate({"url": "http://127.0.0.1:8080/hook", "secret_env": "HOOK_SECRET"})
    # A config built without validation still never sends over http.
    config = WebhookTargetConfig.model_construct(url="http://127.0.0.1:8080/hook", secret_env="HOOK_SECRET")
    with pytest.raises(TargetError) as caught:
        WebhookTarget("hook", config, env={"HOOK_SECRET": SECRET}, base_dir=tmp_path)
    assert caught.value.code == "target-config-invalid"


def test_failures_never_show_the_private_key(
    receiver: WebhookServer,
    client_identity: ClientIdentity,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    closed_port: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    bundle = make_bundle("shop", "shop.example.com")
    nowhere = f"https://127.0.0.1:{closed_port}/hook"
    cases: list[tuple[str, WebhookTarget]] = [
        ("target-rejected", webhook(receiver.url(), tmp_path, client_identity, receiver.ca)),
        ("target-unreachable", webhook(nowhere, tmp_path, client_identity, receiver.ca)),
        # The receiver's CA is not trusted: the TLS check fails.
        ("target-unreachable", webhook(receiver.url(), tmp_path, client_identity, None)),
        # No client certificate: the receiver ends the handshake.
        ("target-unreachable", webhook(receiver.url(), tmp_path, None, receiver.ca)),
        ("target-secret-missing", webhook(receiver.url(), tmp_path, client_identity, receiver.ca, env={})),
    ]
    receiver.mode = "fail"
    for code, target in cases:
        with pytest.raises(TargetError) as caught:
            target.deploy(bundle)
        assert caught.value.code == code, caught.value.one_line()
        assert_no_key(caught.value, bundle)
    with pytest.raises(TargetError, match="answered 500"):
        cases[0][1].deploy(bundle)
    broken = tmp_path / "broken-key.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    target = webhook(
        receiver.url(), tmp_path, None, receiver.ca,
        config={"client_cert": str(client_identity.cert), "client_key": str(broken)},
    )  # fmt: skip
    with pytest.raises(TargetError) as caught:
        target.deploy(bundle)
    assert caught.value.code == "target-config-invalid"
    assert str(broken) in str(caught.value) and "not a key" not in chain_texts(caught.value)
    for fragment in key_fragments(bundle):
        assert fragment not in caplog.text


# ---------------------------------------------------------------- aws_acm


def acm_target(moto: MotoKms, **config: Any) -> AwsAcmTarget:
    fields: dict[str, Any] = {"endpoint_url": moto.endpoint_url}
    fields |= config
    return AwsAcmTarget("acm", AwsAcmTargetConfig.model_validate(fields), env=moto.env, max_attempts=1)


def acm_client(moto: MotoKms, region: str | None = None) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "acm",
        endpoint_url=moto.endpoint_url,
        region_name=region or moto.region,
        aws_access_key_id=moto.access_key_id,
        aws_secret_access_key=moto.secret_access_key,
    )


def certificates_for(moto: MotoKms, domain: str) -> list[str]:
    listed = acm_client(moto).list_certificates(Includes={"keyTypes": ["EC_prime256v1", "RSA_2048"]}, MaxItems=1000)[
        "CertificateSummaryList"
    ]
    return [c["CertificateArn"] for c in listed if c["DomainName"] == domain]


def test_acm_import_then_rotation_reimports_onto_the_same_arn(moto_kms: MotoKms) -> None:
    domain = f"shop-{secrets.token_hex(4)}.example.com"
    first = make_bundle("shop-" + domain[5:13], domain)
    target = acm_target(moto_kms, tags={"team": "web"})
    assert target.observe(first.name, first.domains).fingerprint is None

    target.deploy(first)
    arn = target.certificate_arn(first.name)
    assert arn is not None and certificates_for(moto_kms, domain) == [arn]
    tags = acm_client(moto_kms).list_tags_for_certificate(CertificateArn=arn)["Tags"]
    assert {"Key": NAME_TAG, "Value": first.name} in tags and {"Key": "team", "Value": "web"} in tags
    assert target.observe(first.name, first.domains).fingerprint == first.fingerprint

    second = make_bundle(first.name, domain)
    fresh = acm_target(moto_kms, tags={"team": "web"})  # another process: finds the ARN by its tag
    fresh.deploy(second)
    assert fresh.certificate_arn(first.name) == arn
    assert certificates_for(moto_kms, domain) == [arn]  # re-imported, not a second certificate
    seen = acm_target(moto_kms).observe(first.name, first.domains)
    assert seen.fingerprint == second.fingerprint and seen.error is None
    assert seen.not_after is not None and seen.serial_number


def test_acm_pinned_arn(moto_kms: MotoKms) -> None:
    domain = f"pinned-{secrets.token_hex(4)}.example.com"
    client = acm_client(moto_kms)
    seed = make_bundle("seed", domain)
    arn = client.import_certificate(Certificate=seed.cert_pem.encode(), PrivateKey=seed.key_pem.reveal())[
        "CertificateArn"
    ]
    target = acm_target(moto_kms, certificate_arn=arn)
    bundle = make_bundle("pinned", domain)
    target.deploy(bundle)
    assert target.observe("pinned", bundle.domains).fingerprint == bundle.fingerprint
    assert certificates_for(moto_kms, domain) == [arn]
    with pytest.raises(TargetError) as caught:
        target.deploy(make_bundle("other", domain))
    assert caught.value.code == "target-acm-arn-taken"


def test_acm_wrong_region_or_endpoint_is_a_one_line_error(moto_kms: MotoKms, closed_port: int) -> None:
    bundle = make_bundle("shop", "shop.example.com")
    unreachable = acm_target(moto_kms, endpoint_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(TargetError) as caught:
        unreachable.deploy(bundle)
    assert caught.value.code == "target-unreachable"
    assert f"127.0.0.1:{closed_port}" in str(caught.value)
    assert_no_key(caught.value, bundle)
    seen = unreachable.observe("shop", bundle.domains)
    assert seen.fingerprint is None and seen.error and "\n" not in seen.error

    # An ARN of eu-west-1 asked for in another region: not found there.
    arn = acm_client(moto_kms).import_certificate(
        Certificate=bundle.cert_pem.encode(), PrivateKey=bundle.key_pem.reveal()
    )["CertificateArn"]
    elsewhere = acm_target(moto_kms, region="us-west-2", certificate_arn=arn)
    with pytest.raises(TargetError) as caught:
        elsewhere.deploy(bundle)
    assert caught.value.code == "target-acm-not-found", caught.value.one_line()
    assert_no_key(caught.value, bundle)

    no_region = AwsAcmTarget(
        "acm", AwsAcmTargetConfig(endpoint_url=moto_kms.endpoint_url), env={"AWS_ACCESS_KEY_ID": "x"}
    )
    with pytest.raises(TargetError) as caught:
        no_region.deploy(bundle)
    assert caught.value.code == "target-config-invalid"


def test_acm_refusal_of_the_key_does_not_show_it(moto_kms: MotoKms, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = make_bundle("broken", "broken.example.com")
    broken_key = (
        b"-----BEGIN PRIVATE KEY-----\n"
        b"TUlJQnJva2VuS2V5TWF0ZXJpYWxfc2hvdWxkX25ldmVyX2xlYWs=\n"
        b"-----END PRIVATE KEY-----\n"
    )
    bundle = DeployBundle(
        name=good.name,
        domains=good.domains,
        cert_pem=good.cert_pem,
        chain_pem=good.chain_pem,
        key_pem=SecretBytes(broken_key),
        fingerprint=good.fingerprint,
    )
    with pytest.raises(TargetError) as caught:
        acm_target(moto_kms).deploy(bundle)
    assert caught.value.code == "target-acm-rejected"
    assert_no_key(caught.value, bundle)
    # A successful import is not logged with its parameters either.
    acm_target(moto_kms).deploy(good)
    for fragment in key_fragments(bundle) + key_fragments(good):
        assert fragment not in caplog.text
    assert json.dumps(good.key_pem.reveal().decode())[1:40] not in caplog.text


# ---------------------------------------------------------------- the Target contract


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_aws_acm_passes_the_target_contract(moto_kms: MotoKms, check: Any) -> None:
    token = secrets.token_hex(4)
    check(lambda: acm_target(moto_kms), bundle_maker(f"contract-{token}", (f"c{token}.example.test",)))


def test_aws_acm_errors_hold_no_key(moto_kms: MotoKms, closed_port: int) -> None:
    check_errors_hold_no_key(
        lambda: acm_target(moto_kms, endpoint_url=f"http://127.0.0.1:{closed_port}"), bundle_maker("contract")
    )


def test_webhook_errors_hold_no_key(
    receiver: WebhookServer, client_identity: ClientIdentity, tmp_path: Path, closed_port: int
) -> None:
    """The observation checks do not apply: a webhook without ``verify`` reports ``unknown``."""
    make_bundle = bundle_maker("contract")
    check_errors_hold_no_key(
        lambda: webhook(f"https://127.0.0.1:{closed_port}/", tmp_path, client_identity, receiver.ca), make_bundle
    )
    receiver.mode = "wrong"
    check_errors_hold_no_key(lambda: webhook(receiver.url(), tmp_path, client_identity, receiver.ca), make_bundle)
    receiver.mode = "redirect"
    receiver.redirect_to = receiver.url("/elsewhere")
    check_errors_hold_no_key(lambda: webhook(receiver.url(), tmp_path, client_identity, receiver.ca), make_bundle)

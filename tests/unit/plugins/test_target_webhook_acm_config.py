"""webhook and aws_acm without servers: declarations, address rules, signature, factories."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certreconcile.errors import DesiredStateError
from certreconcile.plugins.registry import PluginContext, available_kinds, create_target
from certreconcile.plugins.targets.aws_acm import AwsAcmTarget
from certreconcile.plugins.targets.aws_acm_config import AwsAcmTargetConfig
from certreconcile.plugins.targets.webhook import WebhookTarget, address_refusal, sign_body
from certreconcile.plugins.targets.webhook_config import WebhookTargetConfig
from engine import cert, desired_doc, load

HOOK = {"url": "https://hooks.example.com/certs", "secret_env": "HOOK_SECRET"}


@pytest.mark.parametrize(
    ("address", "refused", "allowed"),
    [
        ("127.0.0.1", None, None),
        ("10.1.2.3", None, None),
        ("192.168.0.10", None, None),
        ("::1", None, None),
        ("fd12:3456::1", None, None),
        ("203.0.113.7", None, None),
        ("169.254.169.254", "a cloud metadata address", None),
        ("169.254.170.2", "a cloud metadata address", None),
        ("100.100.100.200", "a cloud metadata address", None),
        ("fd00:ec2::254", "a cloud metadata address", None),
        ("169.254.1.1", "a link-local address", None),
        ("fe80::1", "a link-local address", None),
        ("::ffff:169.254.169.254", "a cloud metadata address", None),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address", None),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "a cloud metadata address", None),  # 6to4 of 169.254.169.254
        ("0.0.0.0", "not a unicast address", "not a unicast address"),  # noqa: S104 - an address to refuse
        ("::", "not a unicast address", "not a unicast address"),
        ("224.0.0.1", "not a unicast address", "not a unicast address"),
        ("255.255.255.255", "not a unicast address", "not a unicast address"),
    ],
)
def test_address_rules(address: str, refused: str | None, allowed: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip) == refused
    assert address_refusal(ip, allow_link_local=True) == allowed


def test_signature_covers_timestamp_and_exact_body() -> None:
    body = b'{"name":"shop"}'
    expected = hmac.new(b"s3cret", b"1767268800." + body, hashlib.sha256).hexdigest()
    assert sign_body(b"s3cret", "1767268800", body) == f"sha256={expected}"
    assert sign_body(b"s3cret", "1767268801", body) != sign_body(b"s3cret", "1767268800", body)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "http://hooks.example.com/x"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com:99999/x"}, "port from 1 to 65535"),
        ({"url": "https://hooks.example.com:0/x"}, "port from 1 to 65535"),
        ({"secret_env": None}, r"needs secret_env \(a signed body\) or client_cert"),
        ({"client_cert": "c.pem"}, "client_cert and client_key go together"),
        ({"secret_env": "not a name"}, "secret_env"),
        ({"timeout": "0s"}, "longer than zero"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by certreconcile"),
        ({"headers": {"X-Certreconcile-Signature": "x"}}, "set by certreconcile"),
        ({"headers": {"Bad Header": "x"}}, "not a valid header name"),
        ({"headers": {"X-Ok": "a\r\nInjected: 1"}}, "line break"),
        ({"allow_private": True}, "allow_private"),
    ],
)
def test_webhook_declaration_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookTargetConfig.model_validate({**HOOK, **fields})


def test_webhook_declaration_with_mutual_tls_only() -> None:
    config = WebhookTargetConfig.model_validate(
        {"url": "https://10.0.0.5:8443/hook", "client_cert": "c.pem", "client_key": "k.pem"}
    )
    assert config.secret_env is None and config.timeout == "10s" and not config.allow_link_local


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tags": {"certreconcile:name": "x"}}, "reserved"),
        ({"tags": {"aws:createdBy": "x"}}, "reserved"),
        ({"tags": {"": "x"}}, "1-128"),
        ({"certificate_arn": "arn:aws:kms:eu-west-1:123456789012:key/abc"}, "certificate_arn"),
        ({"region": "EU West"}, "region"),
    ],
)
def test_aws_acm_declaration_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AwsAcmTargetConfig.model_validate(fields)


def test_desired_state_builds_both_targets_without_io(tmp_path: Path) -> None:
    targets = {
        "hook": {"webhook": {**HOOK, "client_cert": "tls/client.pem", "client_key": "tls/client.key", "timeout": "3s"}},
        "acm": {"aws_acm": {"region": "eu-west-1", "tags": {"team": "web"}}, "verify": "127.0.0.1:443"},
    }
    desired = load(tmp_path / "d", desired_doc([cert("shop", targets=["hook", "acm"])], targets=targets))
    assert available_kinds("targets") >= {"files", "webhook", "aws_acm"}
    context = PluginContext(desired_dir=tmp_path / "d", data_dir=tmp_path, env={})
    hook = create_target(desired.targets["hook"], context)
    acm = create_target(desired.targets["acm"], context)
    assert isinstance(hook, WebhookTarget) and isinstance(acm, AwsAcmTarget)
    assert hook._client_cert == tmp_path / "d" / "tls" / "client.pem"
    assert hook._timeout == 3.0
    assert hook.verify_timeout() == timedelta(seconds=30)
    assert hook.observe("shop", ("shop.example.com",)).unknown


def test_desired_state_refuses_an_http_webhook(tmp_path: Path) -> None:
    targets = {"hook": {"webhook": {**HOOK, "url": "http://hooks.example.com/x"}}}
    with pytest.raises(DesiredStateError) as caught:
        load(tmp_path / "d", desired_doc([cert("shop", targets=["hook"])], targets=targets))
    assert "url" in str(caught.value.diagnostics)


def test_building_the_targets_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from certreconcile.plugins.targets.aws_acm_config import AwsAcmTargetConfig\n"
        "from certreconcile.plugins.targets.aws_acm import AwsAcmTarget\n"
        "AwsAcmTarget('acm', AwsAcmTargetConfig(), env={})\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

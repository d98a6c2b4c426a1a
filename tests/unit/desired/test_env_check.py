"""(l) ``*_env`` secrets the plan needs but the environment lacks: refused by plan and apply, positioned."""

from __future__ import annotations

from pathlib import Path

import pytest

from certreconcile.cli.preflight import check_environment
from certreconcile.clock import FixedClock
from certreconcile.desired import load_desired
from certreconcile.errors import DesiredStateError
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, plan_now

ACME_EAB = """\
issuers:
  ca:
    acme:
      directory: https://acme.example/dir
      eab: {key_id_env: EAB_KID, hmac_key_env: EAB_HMAC}
"""
LOCAL = "issuers:\n  ca: {local_ca: {}}\n"
CERT = "certificates:\n  - {name: w, domains: [w.example.com], issuer: ca, targets: [out]}\n"
FILES = "targets:\n  out: {files: {dir: /srv/out}}\n"
WEBHOOK = "targets:\n  out: {webhook: {url: 'https://hook.example', secret_env: HOOK_SECRET}}\n"
DNS = "certificates:\n  - {name: w, domains: [w.example.com], issuer: ca, challenge: dns-01, dns_provider: dns}\n"
CLOUDFLARE = "dns_providers:\n  dns: {cloudflare: {}}\n"
RFC2136 = "dns_providers:\n  dns: {rfc2136: {server: '127.0.0.1:53', tsig_key_name: k, tsig_secret_env: TSIG}}\n"
ACME = ACME_EAB.split("      eab", maxsplit=1)[0]
VAULT_PKI = "issuers:\n  ca:\n    vault_pki: {url: 'https://v:8200', role: r, auth: approle, role_id_env: ROLE}\n"
VAULT_KMS = "kms:\n  vault: {url: 'https://v:8200', key: k, auth: approle, role_id_env: ROLE}\n"


def position(text: str, at: str) -> str:
    before = text[: text.index(at)]
    return f"c.yaml:{before.count(chr(10)) + 1}:{len(before.rsplit(chr(10), 1)[-1]) + 1}"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param(ACME_EAB + FILES + CERT, {}, [("EAB_KID", "EAB_KID"), ("EAB_HMAC", "EAB_HMAC")], id="acme-eab"),
        pytest.param(ACME_EAB + FILES + CERT, {"EAB_KID": "k", "EAB_HMAC": " "}, [("EAB_HMAC", "EAB_HMAC")],
                     id="acme-eab-blank-counts-as-unset"),
        pytest.param(LOCAL + WEBHOOK + CERT, {}, [("HOOK_SECRET", "HOOK_SECRET")], id="webhook-secret"),
        pytest.param(ACME + FILES + RFC2136 + DNS, {}, [("TSIG", "TSIG")],
                     id="rfc2136-tsig"),
        pytest.param(ACME + FILES + CLOUDFLARE + DNS, {},
                     [("CLOUDFLARE_API_TOKEN", "{}}")], id="cloudflare-default-variable-at-its-kind"),
        pytest.param(VAULT_PKI + FILES + CERT, {}, [("ROLE", "ROLE"), ("VAULT_SECRET_ID", "{url")],
                     id="vault-pki-approle"),
        pytest.param(VAULT_PKI.replace("approle", "token") + FILES + CERT, {}, [],
                     id="vault-token-auth-needs-no-approle-ids"),
        pytest.param(VAULT_KMS + LOCAL + FILES + CERT, {}, [], id="not-the-kms-plan-needs-no-kms-credentials"),
        pytest.param(LOCAL + WEBHOOK + CERT, {"HOOK_SECRET": "s"}, [], id="set"),
        pytest.param(LOCAL + WEBHOOK.replace("targets:\n", "targets:\n  unused: {files: {dir: /srv/u}}\n")
                     + CERT.replace("[out]", "[unused]"), {}, [], id="a-target-no-change-uses"),
    ],
)
def test_unset_variables_the_plan_needs(
    tmp_path: Path, text: str, env: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    (tmp_path / "c.yaml").write_text(text)
    desired = load_desired(tmp_path)
    plan = plan_now(desired, InMemoryStore(clock=FixedClock(T0)), FixedClock(T0))
    if not expected:
        check_environment(tmp_path, desired, plan, env)
        return
    with pytest.raises(DesiredStateError) as raised:
        check_environment(tmp_path, desired, plan, env)
    diagnostics = raised.value.diagnostics
    assert [(d.code, str(d.location)) for d in diagnostics] == sorted(  # type: ignore[attr-defined]
        ("env-unset", position(text, at)) for _, at in expected
    )
    for diagnostic, (variable, _) in zip(diagnostics, sorted(expected, key=lambda e: text.index(e[1])), strict=True):
        assert variable in diagnostic.message  # type: ignore[attr-defined]
        assert f"export {variable}" in diagnostic.hint  # type: ignore[attr-defined]


def test_no_changes_need_no_secrets(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(LOCAL + WEBHOOK)  # the webhook is declared, no certificate uses it
    desired = load_desired(tmp_path)
    plan = plan_now(desired, InMemoryStore(clock=FixedClock(T0)), FixedClock(T0))
    assert plan.is_empty
    check_environment(tmp_path, desired, plan, {})

"""``certreconcile check`` pieces: the optional ``check()`` of plug-ins, the built-ins' checks, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certreconcile.errors import CertReconcileError, TargetError
from certreconcile.plugins.kms.local import LocalKms, ensure_master_key
from certreconcile.plugins.ports import NO_CHECK
from certreconcile.plugins.targets.files import FilesTarget
from certreconcile.plugins.targets.files_config import FilesTargetConfig
from certreconcile.preflight.challenges import txt_fqdn
from certreconcile.preflight.report import CheckOutcome, CheckReport, CheckResult
from certreconcile.preflight.run import _plugin_check


class OldPlugin:
    """A plug-in written before ``check()`` existed: it keeps working, reported as not checkable."""

    name = "old"


class RefusingPlugin:
    name = "refusing"

    def check(self) -> str:
        raise CertReconcileError("the token was refused", code="dns-auth-failed", hint="renew the token")


class BuggyPlugin:
    name = "buggy"

    def check(self) -> str:
        raise KeyError("secret-value")


def test_a_plugin_without_check_is_skipped_with_no_check_available() -> None:
    result = _plugin_check("target old", OldPlugin())
    assert (result.outcome, result.message) == (CheckOutcome.SKIPPED, NO_CHECK)


def test_a_failing_check_keeps_its_own_code_message_and_hint() -> None:
    result = _plugin_check("dns_provider refusing", RefusingPlugin())
    assert (result.outcome, result.code, result.message, result.hint) == (
        CheckOutcome.FAILED, "dns-auth-failed", "the token was refused", "renew the token"
    )  # fmt: skip


def test_a_crashing_check_fails_alone_without_its_exception_text() -> None:
    result = _plugin_check("target buggy", BuggyPlugin())
    assert (result.outcome, result.code) == (CheckOutcome.FAILED, "check-crashed")
    assert "secret-value" not in result.message


def test_report_text_and_json() -> None:
    report = CheckReport(
        (
            _plugin_check("target old", OldPlugin()),
            _plugin_check("dns_provider refusing", RefusingPlugin()),
        )
    )
    assert not report.ok
    text = report.as_text()
    assert "dns_provider refusing\n  credentials  failed   error[dns-auth-failed]: the token was refused" in text
    assert text.endswith("check: 0 passed, 1 failed, 1 skipped\n")
    payload = json.loads(report.as_json())
    assert payload["summary"] == {"ok": 0, "failed": 1, "skipped": 1} and payload["ok"] is False


def test_a_wildcard_shares_its_base_names_challenge_record() -> None:
    assert txt_fqdn("*.Shop.Example.com") == txt_fqdn("shop.example.com") == "_acme-challenge.shop.example.com"


def test_files_target_check_creates_nothing(tmp_path: Path) -> None:
    existing = FilesTarget("t", FilesTargetConfig(dir=str(tmp_path)), tmp_path)
    assert existing.check() == f"{tmp_path} is writable"
    missing = FilesTarget("t", FilesTargetConfig(dir="a/b"), tmp_path)
    assert missing.check() == f"{tmp_path} is writable ({tmp_path / 'a' / 'b'} will be made there)"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    under_a_file = FilesTarget("t", FilesTargetConfig(dir="file/sub"), tmp_path)
    with pytest.raises(TargetError) as failure:
        under_a_file.check()
    assert failure.value.code == "target-write-failed"


def test_local_kms_check_never_creates_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    assert "does not exist yet" in LocalKms(key_file).check()
    assert not key_file.exists()
    ensure_master_key(key_file)  # what the first apply does
    assert LocalKms(key_file).check().startswith("wrapped and unwrapped a test data key under local:")


def test_a_plugin_that_cannot_be_built_fails_its_own_check() -> None:
    from certreconcile.preflight.run import _make

    results: list[CheckResult] = []

    def broken() -> object:
        raise ValueError("boom")

    def refused() -> object:
        raise CertReconcileError("no such key", code="kms-key-missing")

    assert _make(results, "kms odd", "credentials", broken) is None
    assert _make(results, "kms local", "credentials", refused) is None
    assert _make(results, "target ok", "test command", lambda: "built") == "built"
    assert [(r.subject, r.code) for r in results] == [("kms odd", "check-crashed"), ("kms local", "kms-key-missing")]

"""``kms rewrap`` on a real PostgreSQL after a real apply: local → AWS (moto) → Vault (OpenBao).

After each hop every certificate still decrypts, a redistribution works and the local CA
still signs a rotation; only wrapped_dek/kms/key_id change in the envelopes (the private-key
ciphertext stays: no private key is decrypted). An interrupted rewrap leaves every row
decryptable and a second run finishes it. The CLI command once, end to end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from certreconcile.actual.embedded import postgres_bin_dir
from certreconcile.actual.repository import PostgresStore
from certreconcile.actual.store import KeyRefTable, StoredKeyRef
from certreconcile.apply.executor import apply_plan
from certreconcile.apply.rewrap import key_context, rewrap_keys
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import open_envelope, parse_envelope
from certreconcile.errors import KmsError
from certreconcile.plan import Action
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.ports import EncryptionContext, Kms, SecretBytes, WrappedKey
from certreconcile.wiring import RewrapKms, Settings, build_environment, build_rewrap_kms
from e2e.conftest import Runner
from engine import T0, cert, desired_doc, load, plan_now, sealed_certificate_rows
from kms_servers import BaoTransit, MotoKms

pytestmark = pytest.mark.integration

TARGETS = {"deploy": {"files": {"dir": "out/deploy"}}, "extra": {"files": {"dir": "out/extra"}}}


def _settings(directory: Path, env: dict[str, str]) -> Settings:
    return Settings(
        desired_dir=directory.resolve(),
        data_dir=directory.resolve() / ".certreconcile",
        database_url=None,
        env={**env, "USER": "tester"},
    )


def _doc(kms: dict[str, Any], certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {**desired_doc(certificates, targets=TARGETS), "kms": kms}


def _kms_file(path: Path, kms: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"kms": kms}))
    return path


def _stored(store: PostgresStore) -> list[StoredKeyRef]:
    found: list[StoredKeyRef] = []
    with store.session() as session:
        for table in KeyRefTable:
            found.extend(session.list_key_refs(table, None, 10_000))
    return found


def _envelopes(store: PostgresStore) -> dict[tuple[str, str], dict[str, object]]:
    return {(s.table.value, s.row_id): parse_envelope(s.key_ref) for s in _stored(store)}


def _assert_all_open(store: PostgresStore, *kms: Kms) -> None:
    """Every stored key opens with one of ``kms`` under its own row's context."""
    for stored in _stored(store):
        candidates = [k for k in kms if k.name == stored.key_ref.kms]
        opened = False
        for candidate in candidates:
            try:
                key = open_envelope(candidate, stored.key_ref, key_context(stored)).reveal()
            except KmsError:
                continue
            assert b"PRIVATE KEY" in key
            opened = True
            break
        assert opened, (stored.table, stored.row_id, stored.key_ref)


def _rewrap_and_check(
    postgres_store: PostgresStore,
    kms: RewrapKms,
    before: dict[tuple[str, str], dict[str, object]],
    kind: str,
    clock: FixedClock,
) -> None:
    """Rewrap every envelope to ``kms.target``: only the wrapped data key changes; a second pass has nothing to do."""
    rewrapped = rewrap_keys(postgres_store, kms.target, kms.sources, actor="user:tester", clock=clock, batch=2)
    assert rewrapped.ok, rewrapped.failures
    assert rewrapped.rewrapped == len(before)
    assert rewrapped.skipped == 0

    after = _envelopes(postgres_store)
    assert after.keys() == before.keys()
    for row, envelope in after.items():
        assert envelope["kms"] == kind
        assert envelope["key_id"] == rewrapped.target_key_id
        assert envelope["ciphertext"] == before[row]["ciphertext"]  # the private key was never re-encrypted
        assert envelope["nonce"] == before[row]["nonce"]
        assert envelope["context"] == before[row]["context"]
    _assert_all_open(postgres_store, kms.target)

    again = rewrap_keys(postgres_store, kms.target, kms.sources, actor="user:tester", clock=clock)
    assert (again.rewrapped, again.skipped) == (0, len(before))  # nothing left: resumable, idempotent


def _declare_and_rotate(
    desired_dir: Path,
    settings: Settings,
    postgres_store: PostgresStore,
    clock: FixedClock,
    new: dict[str, Any],
    targets: list[str],
) -> None:
    """Declare the new KMS: a redistribution unwraps the stored keys, then the CA signs a rotation."""
    moved = load(desired_dir, _doc(new, [cert("a", targets=targets), cert("b", key="rsa-2048", targets=targets)]))
    environment = build_environment(moved, settings, postgres_store, clock)
    plan = plan_now(moved, postgres_store, clock)
    assert {c.action for c in plan.changes} == {Action.REDISTRIBUTE}
    result = apply_plan(plan, moved, environment)
    assert result.ok, result.failures
    assert b"PRIVATE KEY" in (desired_dir / "out" / "extra" / "a" / "privkey.pem").read_bytes()
    rotation = plan_now(moved, postgres_store, clock, force_rotate=frozenset({"a"}))
    assert [(c.action, c.name) for c in rotation.changes] == [(Action.ROTATE, "a")]
    result = apply_plan(rotation, moved, environment)
    assert result.ok, result.failures


def test_rewrap_local_to_aws_to_vault(
    tmp_path: Path, postgres_store: PostgresStore, database_url: str, moto_kms: MotoKms, bao_transit: BaoTransit
) -> None:
    clock = FixedClock(T0)
    env = {**moto_kms.env, "VAULT_ROLE_ID": bao_transit.role_id, "VAULT_SECRET_ID": bao_transit.secret_id}
    desired_dir = tmp_path / "desired"
    settings = _settings(desired_dir, env)
    local: dict[str, Any] = {"local": {}}
    aws = {"aws": {"key_id": moto_kms.key_arn, "region": moto_kms.region, "endpoint_url": moto_kms.endpoint_url}}
    vault = {"vault": {"url": bao_transit.url, "mount": bao_transit.mount, "key": bao_transit.key, "auth": "approle"}}
    certificates = [cert("a"), cert("b", key="rsa-2048")]

    desired = load(desired_dir, _doc(local, certificates))
    result = apply_plan(
        plan_now(desired, postgres_store, clock), desired, build_environment(desired, settings, postgres_store, clock)
    )
    assert result.ok, result.failures
    before = _envelopes(postgres_store)
    assert {table for table, _row in before} == {"Certificate", "LocalCa", "ApplyStep"}
    assert {str(envelope["kms"]) for envelope in before.values()} == {"local"}

    hops = [(local, aws, "aws"), (aws, vault, "vault")]
    extra_targets = [["deploy", "extra"], ["extra"]]
    for (old, new, kind), targets in zip(hops, extra_targets, strict=True):
        declared = load(desired_dir, _doc(old, certificates))
        kms = build_rewrap_kms(declared, settings, _kms_file(tmp_path / f"to-{kind}.yaml", new), None)
        assert kms.target.name == kind
        _rewrap_and_check(postgres_store, kms, before, kind, clock)
        # Declare the new KMS: a redistribution unwraps the stored keys, the CA signs a rotation.
        _declare_and_rotate(desired_dir, settings, postgres_store, clock, new, targets)
        certificates = [cert("a", targets=targets), cert("b", key="rsa-2048", targets=targets)]
        before = _envelopes(postgres_store)  # the rotation added rows, sealed by the new KMS

    with postgres_store.session() as session:
        events = session.audit_events(action=AuditAction.KEY_REWRAPPED)
    assert len(events) == 5 + 7  # 2 certificates, 2 journal entries, the CA; then 1 more of each (rotation)
    ca_events = [e for e in events if e.detail["table"] == "LocalCa"]
    assert [(e.cert_id, e.name) for e in ca_events] == [(None, "internal"), (None, "internal")]
    assert {e.detail["to_kms"] for e in events} == {"aws", "vault"}

    pg_dump = postgres_bin_dir() / "pg_dump"
    dump = subprocess.run([str(pg_dump), "--dbname", database_url], capture_output=True, check=True).stdout
    assert b"PRIVATE KEY" not in dump


class _FailingAfter:
    """A KMS that wraps ``allowed`` data keys, then fails as an unreachable KMS does."""

    def __init__(self, inner: Kms, allowed: int, error: type[Exception] = KmsError) -> None:
        self._inner = inner
        self.name = inner.name
        self._allowed = allowed
        self._error = error

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        return self._inner.generate_data_key(context)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        return self._inner.decrypt_data_key(wrapped, context)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        if self._allowed <= 0:
            raise self._error("the new KMS went away")
        self._allowed -= 1
        return self._inner.wrap_data_key(dek, context)


@pytest.mark.parametrize("error", [KmsError, RuntimeError], ids=["kms-error", "crash"])
def test_interrupted_rewrap_resumes(tmp_path: Path, postgres_store: PostgresStore, error: type[Exception]) -> None:
    clock = FixedClock(T0)
    desired_dir = tmp_path / "desired"
    settings = _settings(desired_dir, {})
    desired = load(desired_dir, _doc({"local": {}}, [cert(f"c{n}") for n in range(6)]))
    result = apply_plan(
        plan_now(desired, postgres_store, clock), desired, build_environment(desired, settings, postgres_store, clock)
    )
    assert result.ok, result.failures
    old = LocalKms(settings.data_dir / "local-kms.key", create=False)
    new = LocalKms(tmp_path / "new-master.key")
    total = len(_stored(postgres_store))  # 6 certificates, 6 journal entries, the CA
    assert total == 13

    flaky = _FailingAfter(new, allowed=1 + 4, error=error)  # the probe, then 4 rows
    if error is KmsError:
        first = rewrap_keys(postgres_store, flaky, [old], actor="user:tester", clock=clock, batch=3)
        assert first.rewrapped == 4
        assert len(first.failures) == total - 4
        assert not first.ok
    else:
        with pytest.raises(RuntimeError):
            rewrap_keys(postgres_store, flaky, [old], actor="user:tester", clock=clock, batch=3)
    kinds = [stored.key_ref.key_id for stored in _stored(postgres_store)]
    assert kinds.count(new.key_id) == 4
    assert kinds.count(old.key_id) == total - 4
    _assert_all_open(postgres_store, old, new)  # each row under its old or its new master key

    second = rewrap_keys(postgres_store, new, [old], actor="user:tester", clock=clock, batch=3)
    assert second.ok, second.failures
    assert (second.rewrapped, second.skipped) == (total - 4, 4)
    _assert_all_open(postgres_store, new)
    with postgres_store.session() as session:
        assert len(session.audit_events(action=AuditAction.KEY_REWRAPPED)) == total


def test_rewrap_walks_every_page_of_stored_keys(tmp_path: Path, postgres_store: PostgresStore) -> None:
    """250 stored certificates, pages of 100: every key is rewrapped once (timings: bench/rewrap.py)."""
    old = LocalKms(tmp_path / "old.key")
    new = LocalKms(tmp_path / "new.key")
    sealed_certificate_rows(postgres_store, old, 250)
    seen: list[str] = []
    result = rewrap_keys(
        postgres_store,
        new,
        [old],
        actor="user:tester",
        clock=FixedClock(T0),
        batch=100,
        on_progress=lambda stored, outcome: seen.append(stored.row_id),
    )
    assert result.ok
    assert (result.rewrapped, result.skipped, result.conflicts) == (250, 0, 0)
    assert len(seen) == len(set(seen)) == 250  # each row once, across three pages
    again = rewrap_keys(postgres_store, new, [old], actor="user:tester", clock=FixedClock(T0), batch=100)
    assert (again.rewrapped, again.skipped) == (0, 250)  # all under the new key now


def test_cli_rewrap_end_to_end(run_cli: Runner, cli_env: dict[str, str], tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "certs.yaml").write_text(yaml.safe_dump(_doc({"local": {}}, [cert("a"), cert("b")]), sort_keys=False))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    clean = run_cli("plan", "--dir", str(desired), check_code=0)
    assert "kms rewrap" not in clean.stdout + clean.stderr

    to = _kms_file(tmp_path / "new-kms.yaml", {"local": {"key_file": "keys/new.key"}})
    result = run_cli("kms", "rewrap", "--dir", str(desired), "--to", str(to), "--batch", "2", check_code=0)
    assert "rewrapped 5, skipped 0, failed 0" in result.stdout, result.stdout
    assert (tmp_path / "keys" / "new.key").exists()  # relative to the --to file
    again = run_cli("kms", "rewrap", "--dir", str(desired), "--to", str(to), check_code=0)
    assert "rewrapped 0, skipped 5, failed 0" in again.stdout

    # The declaration still names the old master key: plan warns, and names the way out.
    warned = run_cli("plan", "--dir", str(desired), check_code=0)
    assert "kms rewrap" in warned.stdout, warned.stdout
    audit = run_cli("audit", "--dir", str(desired), "--action", "key_rewrapped", "--format", "json", check_code=0)
    assert len(yaml.safe_load(audit.stdout)) == 5
    # Moving back needs the new key as source: --from; without it every row fails, exit 1.
    back = run_cli("kms", "rewrap", "--dir", str(desired), check_code=1)
    assert "failed 5" in back.stdout
    assert "Traceback" not in back.stderr
    run_cli("kms", "rewrap", "--dir", str(desired), "--from", str(to), check_code=0)
    assert "kms rewrap" not in run_cli("plan", "--dir", str(desired), check_code=0).stdout

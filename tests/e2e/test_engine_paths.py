"""Issue 11's acceptance: `plan`, `apply`, `run` and the facade produce identical plans for the same inputs.

One desired state, one database state, one clock (the CLI's through CERTRECONCILE_TEST_NOW, the
in-process ones a FixedClock at the same instant). The state holds every kind of declaration change
and stored keys wrapped by another master key than the declared one, so the KMS-drift warning (which
`run` once left out) is part of what must agree.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.cli.commands.run import GitDesiredSource
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.manager import CertificateManager
from certreconcile.plan import plan_from_json
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.reconciler import Reconciler
from certreconcile.render import render_json, render_text
from certreconcile.wiring import Settings, build_environment
from e2e.conftest import Runner

BEFORE = """\
kms: {local: {}}
issuers:
  internal: {local_ca: {common_name: Paths Test CA, lifetime: 90d}}
targets:
  web: {files: {dir: deploy/web}}
  more: {files: {dir: deploy/more}}
certificates:
  - {name: shop, domains: [shop.example.com], issuer: internal, targets: [web]}
  - {name: api, domains: [api.example.com], issuer: internal, targets: [web]}
  - {name: old, domains: [old.example.com], issuer: internal, targets: [web]}
"""

# issue blog, rotate api (a domain added), redistribute shop (a target added), retire old.
AFTER = """\
kms: {local: {}}
issuers:
  internal: {local_ca: {common_name: Paths Test CA, lifetime: 90d}}
targets:
  web: {files: {dir: deploy/web}}
  more: {files: {dir: deploy/more}}
certificates:
  - {name: shop, domains: [shop.example.com], issuer: internal, targets: [web, more]}
  - {name: api, domains: [api.example.com, www.api.example.com], issuer: internal, targets: [web]}
  - {name: blog, domains: [blog.example.com], issuer: internal, targets: [web]}
"""


def test_plan_apply_run_and_the_facade_plan_alike(
    database_url: str, tmp_path: Path, run_cli: Runner, cli_env: dict[str, str]
) -> None:
    desired_dir = tmp_path / "desired"
    desired_dir.mkdir()
    (desired_dir / "certificates.yaml").write_text(BEFORE)
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    env = {**cli_env, "CERTRECONCILE_TEST_NOW": now.isoformat()}
    run_cli("apply", "--dir", str(desired_dir), "--auto-approve", env=env, check_code=0)

    # The declarations change, and the master key file is replaced by another one (keys moved away
    # from the declared key: the plan must warn, whoever plans).
    (desired_dir / "certificates.yaml").write_text(AFTER)
    old_key = Path(env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"])
    shutil.move(old_key, old_key.with_name("retired.key"))
    assert LocalKms(old_key).key_id  # a new master key in its place
    run_cli("validate", "--dir", str(desired_dir), env=env, check_code=0)

    # 1. `certreconcile plan` (read-only).
    from_plan = run_cli("plan", "--dir", str(desired_dir), "--format", "json", env=env, check_code=0).stdout
    the_plan = plan_from_json(json.loads(from_plan))
    assert sorted((c.action.value, c.name) for c in the_plan.changes) == [
        ("issue", "blog"), ("redistribute", "shop"), ("retire", "old"), ("rotate", "api")
    ]  # fmt: skip
    assert any("wrapped by another KMS or master key" in warning for warning in the_plan.warnings)
    assert render_json(the_plan) == from_plan

    # 2. The facade, over the same store and clock.
    settings = Settings.from_env(desired_dir, env)
    store = PostgresStore(database_url)
    clock = FixedClock(now)
    manager = CertificateManager.from_directory(desired_dir, clock, env)
    assert render_json(manager.plan(settings=settings)) == from_plan

    # 3. One cycle of `run` (declaration changes are left for apply, so the state stays as it is):
    # without probing the targets as `plan` does by default, and probing them as `plan --refresh` does.
    def environment(state: DesiredState) -> ApplyEnvironment:
        return build_environment(state, settings, store, clock)

    def cycle_plan(*, refresh: bool) -> str:
        reconciler = Reconciler(GitDesiredSource(desired_dir), store, environment, clock, refresh=refresh,
                                settings=settings, destroy_threshold=settings.destroy_threshold)  # fmt: skip
        cycle = reconciler.cycle()
        assert cycle.plan is not None and not cycle.errors and not cycle.results, cycle
        assert sorted(c.name for c in cycle.deferred) == ["api", "blog", "old", "shop"]
        return render_json(cycle.plan)

    assert cycle_plan(refresh=False) == from_plan
    refreshed = run_cli("plan", "--dir", str(desired_dir), "--format", "json", "--refresh", env=env, check_code=0)
    assert cycle_plan(refresh=True) == refreshed.stdout != from_plan  # the probe saw `more` serve nothing yet

    # 4. `certreconcile apply`: the plan it shows is the one it runs (its run records the change digest).
    # (Its changes then fail to unwrap the CA key under the new master key: not what this test is about.)
    applied = run_cli("apply", "--dir", str(desired_dir), "--auto-approve", "--allow-destroy", "1", env=env)
    assert applied.stdout.startswith(render_text(the_plan, color=False)), applied.stdout
    assert _last_run_digest(database_url) == the_plan.change_digest


def _last_run_digest(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT plan_digest FROM ApplyRun ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def test_an_unreadable_test_clock_is_a_usage_error(tmp_path: Path, run_cli: Runner, cli_env: dict[str, str]) -> None:
    (tmp_path / "certificates.yaml").write_text(BEFORE)
    env = {**cli_env, "CERTRECONCILE_TEST_NOW": "tomorrow"}
    failed = run_cli("plan", "--dir", str(tmp_path), env=env, check_code=1)
    assert "error[usage]: CERTRECONCILE_TEST_NOW='tomorrow' is not an ISO-8601 time" in failed.stderr


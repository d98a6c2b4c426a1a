"""Apply renews an agent's own certificate through the channel, records when agents answered, and
``status`` shows the agents; ``agent enroll`` / ``agent ca`` through the command line.

Against the session PostgreSQL, the local KMS and a real mutual-TLS stand-in for the agent
(tests/fleet_servers.py) that keeps its key to itself: only CSRs leave it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from certreconcile import engine
from certreconcile.actual.store import StateStore
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.cli.apply_output import report
from certreconcile.cli.commands.agent_enroll import register
from certreconcile.cli.status import render_status_json, render_status_table
from certreconcile.clock import FixedClock
from certreconcile.desired.model import AgentSpec, DesiredState
from certreconcile.fleet.enrol import enrol_agent
from certreconcile.fleet.protocol import agent_uri
from certreconcile.plan.fleet import AgentRenewal
from engine import desired_doc, environment, load, plan_now, settings_for
from fleet_servers import AgentStandIn, agent_stand_in, csr_for


@pytest.fixture
def desired(tmp_path: Path) -> DesiredState:
    return load(tmp_path / "desired", desired_doc([]))


def _with_agent(desired: DesiredState, url: str) -> DesiredState:
    return replace(desired, agents={"web-1": AgentSpec(name="web-1", url=url, timeout=timedelta(seconds=5))})


def _agent_handlers(stand_in: AgentStandIn, key: ec.EllipticCurvePrivateKey, installed: list[str]) -> None:
    def certificate(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        installed.append(body["cert_pem"])
        cert = x509.load_pem_x509_certificate(body["cert_pem"].encode())
        from certreconcile.fleet.ca import agent_row_of

        row = agent_row_of("web-1", cert)
        return 200, {"fingerprint": row.fingerprint, "serial": row.serial, "not_after": row.not_after.isoformat()}

    stand_in.handlers["csr"] = lambda body: (200, {"csr_pem": csr_for(key)})
    stand_in.handlers["certificate"] = certificate


def _renewal_plan(desired: DesiredState, store: StateStore, clock: FixedClock) -> Any:
    plan = plan_now(desired, store, clock)
    return replace(plan, agent_renewals=(AgentRenewal("web-1", None, "a third of its life is left"),))


def _enrolled(env: ApplyEnvironment, key: ec.EllipticCurvePrivateKey, now: datetime) -> str:
    return enrol_agent(env.store, env.kms, "web-1", csr_for(key), now, "user:tester").row.cert_pem


def test_apply_renews_an_agent_through_the_channel_and_records_its_contact(
    tmp_path: Path, desired: DesiredState, postgres_store: StateStore, database_url: str
) -> None:
    now = datetime.now(UTC)  # the TLS handshake checks validity against the real time
    clock = FixedClock(now)
    key = ec.generate_private_key(ec.SECP256R1())
    env = environment(tmp_path / "desired", desired, postgres_store, clock)
    enrolled_pem = _enrolled(env, key, now - timedelta(days=20))
    installed: list[str] = []
    with agent_stand_in(enrolled_pem, key, env_ca(env), tmp_path) as stand_in:
        _agent_handlers(stand_in, key, installed)
        with_agent = _with_agent(desired, stand_in.url)
        env = environment(tmp_path / "desired", with_agent, postgres_store, clock)
        result = engine.apply(_renewal_plan(with_agent, postgres_store, clock), with_agent, env)
    assert result.ok, result.agents
    assert [(a.name, a.outcome) for a in result.agents] == [("web-1", "done")]
    assert [path for path, _ in stand_in.requests] == ["/v1/csr", "/v1/certificate"]
    (new_pem,) = installed
    new = x509.load_pem_x509_certificate(new_pem.encode())
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(uri.value) for uri in san] == [agent_uri("web-1")]
    with postgres_store.session() as session:
        agent = session.load_actual().agents["web-1"]
        assert session.agent_certificate("web-1") is not None
    assert agent.serial == format(new.serial_number, "x")
    assert agent.renewed_at == now and agent.enrolled_at == now - timedelta(days=20)
    assert agent.last_seen_at == now and agent.last_error is None
    with psycopg.connect(database_url) as conn:
        renewed = conn.execute("SELECT name, actor, detail FROM CertAudit WHERE action = 'agent_renewed'").fetchall()
    assert len(renewed) == 1 and renewed[0][0] == "web-1" and renewed[0][2]["serial"] == agent.serial


def env_ca(env: ApplyEnvironment) -> str:
    with env.store.session() as session:
        record = session.fleet_ca()
    assert record is not None
    return record.cert_pem


def test_a_csr_for_another_key_fails_apply_naming_the_agent(
    tmp_path: Path, desired: DesiredState, postgres_store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    clock = FixedClock(now)
    key = ec.generate_private_key(ec.SECP256R1())
    env = environment(tmp_path / "desired", desired, postgres_store, clock)
    enrolled_pem = _enrolled(env, key, now)
    with agent_stand_in(enrolled_pem, key, env_ca(env), tmp_path) as stand_in:
        _agent_handlers(stand_in, ec.generate_private_key(ec.SECP256R1()), [])  # its CSR: another key
        with_agent = _with_agent(desired, stand_in.url)
        env = environment(tmp_path / "desired", with_agent, postgres_store, clock)
        result = engine.apply(_renewal_plan(with_agent, postgres_store, clock), with_agent, env)
    assert not result.ok
    (failed,) = result.agent_failures
    assert failed.name == "web-1" and "error[agent-csr-key-changed]" in failed.message
    assert [path for path, _ in stand_in.requests] == ["/v1/csr"]  # nothing signed, nothing pushed
    with postgres_store.session() as session:
        assert session.load_actual().agents["web-1"].renewed_at is None
    report(result, "text")
    assert "agent web-1" in capsys.readouterr().err


def test_an_unreachable_agent_fails_its_renewal_and_status_shows_it(
    tmp_path: Path, desired: DesiredState, postgres_store: StateStore
) -> None:
    now = datetime.now(UTC)
    clock = FixedClock(now)
    env = environment(tmp_path / "desired", desired, postgres_store, clock)
    _enrolled(env, ec.generate_private_key(ec.SECP256R1()), now)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{probe.getsockname()[1]}"
    with_agent = _with_agent(desired, url)
    env = environment(tmp_path / "desired", with_agent, postgres_store, clock)
    the_plan = _renewal_plan(with_agent, postgres_store, clock)
    result = engine.apply(the_plan, with_agent, env)
    (failed,) = result.agent_failures
    assert "error[agent-unreachable]" in failed.message and url in failed.message
    with postgres_store.session() as session:
        actual = session.load_actual()
    agent = actual.agents["web-1"]
    assert agent.last_seen_at is None and agent.last_error is not None and "agent-unreachable" in agent.last_error
    document = json.loads(render_status_json(actual, now, {}, the_plan))
    (shown,) = document["agents"]
    assert (shown["name"], shown["state"], shown["serial"]) == ("web-1", "unreachable", agent.serial)
    table = render_status_table(actual, now, color=False, specs={}, plan=the_plan)
    assert "Agents:" in table and "web-1" in table and "unreachable" in table and "never" in table


def test_status_table_and_json_show_enrolled_agents(
    tmp_path: Path, desired: DesiredState, postgres_store: StateStore
) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    env = environment(tmp_path / "desired", desired, postgres_store, FixedClock(now))
    _enrolled(env, ec.generate_private_key(ec.SECP256R1()), now)
    with postgres_store.session() as session:
        session.record_agent_contact("web-1", now + timedelta(minutes=5), None)
        actual = session.load_actual()
    table = render_status_table(actual, now + timedelta(hours=1), color=False, specs={})
    assert "No certificates are managed yet" in table
    line = next(line for line in table.splitlines() if line.startswith("web-1"))
    assert "2026-03-31" in line and "2026-03-01 00:05" in line and line.endswith("ok")
    (shown,) = json.loads(render_status_json(actual, now, {}))["agents"]
    assert shown["last_seen_at"] == (now + timedelta(minutes=5)).isoformat() and shown["days_left"] == 30
    renewal_due = replace(plan_now(desired, postgres_store, FixedClock(now)),
                          agent_renewals=(AgentRenewal("web-1", None, "due"),))  # fmt: skip
    (due,) = json.loads(render_status_json(actual, now, {}, renewal_due))["agents"]
    assert due["state"] == "renewal-due"


# --- the command line (a local `agent` group: the real one is cli/commands/agent.py) ---------


def _cli() -> typer.Typer:
    agent_app = typer.Typer()
    register(agent_app)
    root = typer.Typer()
    root.add_typer(agent_app, name="agent")
    return root


def test_agent_enroll_and_ca_on_the_command_line(
    tmp_path: Path, desired: DesiredState, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "desired"
    for name, value in settings_for(directory).env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CERTRECONCILE_DATABASE_URL", database_url)
    runner = CliRunner()
    missing = runner.invoke(_cli(), ["agent", "ca", "--dir", str(directory)])
    assert missing.exit_code == 1 and "error[fleet-ca-missing]" in missing.output
    csr = tmp_path / "web-1.csr"
    csr.write_text(csr_for(ec.generate_private_key(ec.SECP256R1())))
    args = ["agent", "enroll", "web-1", "--csr", str(csr), "--out", str(tmp_path / "web-1.crt"),
            "--ca-out", str(tmp_path / "ca.crt"), "--dir", str(directory)]  # fmt: skip
    enrolled = runner.invoke(_cli(), args)
    assert enrolled.exit_code == 0, enrolled.output
    assert "Enrolled agent web-1" in enrolled.output
    cert = x509.load_pem_x509_certificate((tmp_path / "web-1.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (tmp_path / "web-1.crt").stat().st_mode & 0o777 == 0o644
    again = runner.invoke(_cli(), args)
    assert again.exit_code == 1 and "error[agent-already-enrolled]" in again.output and "--replace" in again.output
    replaced = runner.invoke(_cli(), [*args, "--replace"])
    assert replaced.exit_code == 0 and "Re-enrolled agent web-1" in replaced.output
    printed = runner.invoke(_cli(), ["agent", "ca", "--dir", str(directory)])
    assert printed.exit_code == 0 and printed.output == (tmp_path / "ca.crt").read_text()
    unreadable = runner.invoke(_cli(), ["agent", "enroll", "web-2", "--csr", str(tmp_path / "nope.csr"),
                                        "--out", str(tmp_path / "x.crt"), "--dir", str(directory)])  # fmt: skip
    assert unreadable.exit_code == 1 and "error[agent-csr-unreadable]" in unreadable.output
    assert not (tmp_path / "x.crt").exists()


def test_build_targets_makes_agent_targets_sharing_one_fleet(tmp_path: Path, desired: DesiredState) -> None:
    from certreconcile.desired.model import AgentTargetRef, TargetSpec
    from certreconcile.fleet.target import AgentTarget
    from certreconcile.wiring import build_targets

    specs = {
        f"web-{n}/edge": TargetSpec(name=f"web-{n}/edge", kind="agent", fingerprint="f",
                                    config=AgentTargetRef(agent=f"web-{n}", target="edge",
                                                          url="https://127.0.0.1:9", timeout_seconds=3))
        for n in (1, 2)
    }  # fmt: skip
    with_targets = replace(desired, targets={**desired.targets, **specs})
    targets = build_targets(with_targets, settings_for(tmp_path / "desired"))  # no store: `plan --refresh` alone
    first, second = targets["web-1/edge"], targets["web-2/edge"]
    assert isinstance(first, AgentTarget) and isinstance(second, AgentTarget)
    assert first.fleet is second.fleet and first.verify_timeout() == timedelta(seconds=3)
    assert "deploy" in targets  # the declared targets too
    seen = first.observe("shop", ("shop.example.com",))
    assert seen.unreachable and seen.error is not None and "fleet-ca-missing" in seen.error


def test_the_status_command_lists_the_agents(
    tmp_path: Path, desired: DesiredState, postgres_store: StateStore, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from certreconcile.cli.main import app

    directory = tmp_path / "desired"
    for name, value in settings_for(directory).env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CERTRECONCILE_DATABASE_URL", database_url)
    now = datetime.now(UTC)
    env = environment(directory, desired, postgres_store, FixedClock(now))
    serial = enrol_agent(env.store, env.kms, "web-1", csr_for(ec.generate_private_key(ec.SECP256R1())), now,
                         "user:tester").row.serial  # fmt: skip
    runner = CliRunner()
    shown = runner.invoke(app, ["status", "--format", "json", "--dir", str(directory)])
    assert shown.exit_code == 0, shown.output
    (agent,) = json.loads(shown.stdout)["agents"]
    assert (agent["name"], agent["serial"], agent["state"]) == ("web-1", serial, "not-seen")
    assert agent["last_seen_at"] is None
    table = runner.invoke(app, ["status", "--dir", str(directory)])
    assert table.exit_code == 0 and "Agents:" in table.stdout
    assert any(line.startswith("web-1") and "not-seen" in line for line in table.stdout.splitlines())

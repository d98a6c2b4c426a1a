"""``agents:`` and ``AGENT/TARGET`` references: the specs the loader makes, their fingerprints, the digest."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile.desired import Diagnostic, load_desired, validate_directory
from certreconcile.desired.model import AGENT_TARGET_KIND, DEFAULT_AGENT_TIMEOUT, AgentTargetRef, SourceLocation
from certreconcile.errors import DesiredStateError

FLEET_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fleet" / "desired-state"

BASE = """\
issuers:
  ca:
    local_ca: {lifetime: 30d, common_name: T}
targets:
  local:
    files: {dir: .certreconcile/out}
agents:
  web-1: {url: "https://web-1.internal:9443"}
  web-2:
    url: "https://[::1]:9443"
    timeout: 2m
certificates:
  - name: shop
    domains: [shop.example.com]
    issuer: ca
    targets: [web-2/edge, local, web-1/edge-nginx]
  - name: api
    domains: [api.example.com]
    issuer: ca
    targets: [web-1/edge-nginx]
"""


def load(tmp_path: Path, text: str = BASE, *, with_locations: bool = False):  # type: ignore[no-untyped-def]
    (tmp_path / "d.yaml").write_text(text)
    return load_desired(tmp_path, with_locations=with_locations)


def test_the_fleet_example_loads() -> None:
    state = load_desired(FLEET_EXAMPLE)
    assert set(state.agents) == {"web-1", "web-2", "lb-1"}
    assert all(spec.kind == AGENT_TARGET_KIND for spec in state.targets.values())
    assert validate_directory(FLEET_EXAMPLE) == []


def test_agents_and_agent_targets_are_synthesized(tmp_path: Path) -> None:
    state = load(tmp_path, with_locations=True)
    assert list(state.agents) == ["web-1", "web-2"]
    web1, web2 = state.agents["web-1"], state.agents["web-2"]
    assert (web1.url, web1.timeout) == ("https://web-1.internal:9443", DEFAULT_AGENT_TIMEOUT)
    assert (web2.url, web2.timeout) == ("https://[::1]:9443", timedelta(minutes=2))
    assert web1.location == SourceLocation("d.yaml", 8, 3)
    assert list(state.targets) == ["local", "web-1/edge-nginx", "web-2/edge"]  # one spec per referenced pair
    spec = state.targets["web-1/edge-nginx"]
    assert spec.kind == AGENT_TARGET_KIND
    assert spec.verify is None
    assert spec.config == AgentTargetRef(
        agent="web-1", target="edge-nginx", url="https://web-1.internal:9443", timeout_seconds=60.0
    )
    assert state.targets["web-2/edge"].config == AgentTargetRef(
        agent="web-2", target="edge", url="https://[::1]:9443", timeout_seconds=120.0
    )
    assert state.certificates["shop"].targets == ("local", "web-1/edge-nginx", "web-2/edge")
    assert state.targets["local"].kind == "files"


def test_no_path_or_command_of_an_agent_target_is_in_its_spec(tmp_path: Path) -> None:
    config = load(tmp_path).targets["web-1/edge-nginx"].config
    assert set(config.model_dump()) == {"agent", "target", "url", "timeout_seconds"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('web-1: {url: "https://web-1.internal:9443"}', 'web-1: {url: "https://web-1.internal:9444"}'),
        ('web-1: {url: "https://web-1.internal:9443"}', 'web-1: {url: "https://web-1.internal:9443", timeout: 61s}'),
    ],
)
def test_a_changed_agent_url_or_timeout_changes_the_declaration(tmp_path: Path, old: str, new: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = load(tmp_path / "a")
    after = load(tmp_path / "b", BASE.replace(old, new))
    assert after.targets["web-1/edge-nginx"].fingerprint != before.targets["web-1/edge-nginx"].fingerprint
    assert after.targets["web-2/edge"].fingerprint == before.targets["web-2/edge"].fingerprint
    assert after.digest != before.digest


def test_an_unreferenced_agent_changes_the_digest_only(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = load(tmp_path / "a")
    after = load(tmp_path / "b", BASE.replace("agents:\n", 'agents:\n  spare: {url: "https://spare:9443"}\n'))
    assert "spare" in after.agents
    assert dict(after.targets) == dict(before.targets)
    assert after.digest != before.digest


def test_declarations_without_agents_keep_their_digest(tmp_path: Path) -> None:
    # The digest without agents must not move (saved plans and reviews of existing repositories).
    text = "issuers:\n  ca:\n    local_ca: {lifetime: 30d, common_name: T}\n"
    state = load(tmp_path, text)
    assert state.agents == {}
    issuer = state.issuers["ca"]
    canonical = {
        "kms": {"kind": "local", "config": state.kms.config.model_dump(mode="json")},
        "issuers": {"ca": {"kind": "local_ca", "config": issuer.config.model_dump(mode="json")}},
        "dns_providers": {},
        "targets": {},
        "allowed_domains": [],
        "certificate_fields": [
            "domains", "issuer", "key_type", "renew_before_seconds", "renew_before_fraction",
            "targets", "on_delete", "challenge", "dns_provider",
        ],
        "certificates": {},
    }
    body = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert state.digest == hashlib.sha256(body.encode()).hexdigest()


def test_refusals_name_file_line_column(tmp_path: Path) -> None:
    text = BASE.replace("[web-1/edge-nginx]\n", "[web-9/edge-nginx]\n")
    with pytest.raises(DesiredStateError) as raised:
        load(tmp_path, text)
    (diagnostic,) = raised.value.diagnostics
    assert isinstance(diagnostic, Diagnostic)
    assert str(diagnostic.location) == "d.yaml:20:15"
    assert diagnostic.code == "unknown-agent"
    assert "declare it under agents:" in diagnostic.hint

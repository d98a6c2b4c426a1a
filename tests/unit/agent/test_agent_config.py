"""The agent's configuration file: the central `targets:` kinds and code, strict YAML, problems at file:line:col."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile.agent.config import DEFAULT_STATE_DIR, AgentConfigError, load_agent_config
from certreconcile.agent.environment import check_environment, forbidden_settings
from certreconcile.errors import ConfigError
from certreconcile.fleet.protocol import DEFAULT_REQUEST_WINDOW
from certreconcile.plugins.context import PluginContext, create_target
from certreconcile.plugins.targets.files import FilesTarget

VALID = """\
name: web-1
listen: 127.0.0.1:9443
tls:
  key_file: tls/agent.key
  cert_file: tls/agent.crt
  ca_file: /etc/certreconcile/fleet-ca.crt
targets:
  site:
    files: {dir: out, reload_command: systemctl reload nginx}
    verify: 127.0.0.1:443
    sni: www.example.test
    verify_timeout: 45s
  edge-nginx:
    nginx: {cert_dir: /etc/nginx/certs, pid_file: /run/nginx.pid}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "agent.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(_write(tmp_path, text))
    assert caught.value.code == "agent-config-invalid"
    return [str(diagnostic) for diagnostic in caught.value.diagnostics]


def test_a_valid_file_builds_target_specs_like_the_central_section(tmp_path: Path) -> None:
    config = load_agent_config(_write(tmp_path, VALID))
    base = tmp_path / "conf"
    assert (config.name, config.listen_host, config.listen_port) == ("web-1", "127.0.0.1", 9443)
    assert config.tls.key_file == base / "tls/agent.key"  # relative to the file's directory
    assert config.tls.ca_file == Path("/etc/certreconcile/fleet-ca.crt")
    assert config.request_window == DEFAULT_REQUEST_WINDOW
    assert config.state_dir == base / DEFAULT_STATE_DIR
    assert list(config.targets) == ["edge-nginx", "site"]
    site = config.targets["site"]
    assert (site.kind, site.verify, site.sni, site.verify_timeout) == (
        "files", "127.0.0.1:443", "www.example.test", timedelta(seconds=45))  # fmt: skip
    target = create_target(site, PluginContext(desired_dir=base, data_dir=config.state_dir, env={}))
    assert isinstance(target, FilesTarget)
    assert target.folder("shop") == base / "out" / "shop"
    assert config.targets["edge-nginx"].verify_timeout == timedelta(seconds=30)


def test_request_window_and_state_dir_can_be_set(tmp_path: Path) -> None:
    config = load_agent_config(
        _write(tmp_path, VALID + "request_window: 2m\nstate_dir: /var/lib/certreconcile-agent\n")
    )
    assert config.request_window == timedelta(minutes=2)
    assert config.state_dir == Path("/var/lib/certreconcile-agent")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("database_url: postgresql://db/certs", "agent-config-forbidden-setting"),
        ("kms: {local: {}}", "agent-config-forbidden-setting"),
        ("certificates: []", "schema-unknown-field"),
    ],
)
def test_settings_the_agent_must_not_hold_are_refused_at_their_line(tmp_path: Path, line: str, code: str) -> None:
    problems = _problems(tmp_path, VALID.replace("listen:", f"{line}\nlisten:"))
    key = line.split(":", maxsplit=1)[0]
    what = f"unknown key `{key}`" if code == "schema-unknown-field" else f"`{key}`"
    assert problems[0].startswith(f"{tmp_path}/conf/agent.yaml:2:1: error[{code}]: {what}")
    if code == "schema-unknown-field":
        assert "allowed keys: name, listen, tls" in problems[0]


@pytest.mark.parametrize(("kind", "body"), [("agent", "{url: x}"), ("ssh", "{host: h}"), ("aws_acm", "{region: r}")])
def test_kinds_that_do_not_deploy_on_this_host_are_refused(tmp_path: Path, kind: str, body: str) -> None:
    text = VALID + f"  remote:\n    {kind}: {body}\n"
    problems = _problems(tmp_path, text)
    assert len(problems) == 1
    assert "agent.yaml:16:5: error[agent-target-kind-refused]: targets.remote:" in problems[0]


def test_a_target_is_checked_by_its_kind_with_positions_and_hints(tmp_path: Path) -> None:
    text = VALID.replace("pid_file: /run/nginx.pid}", "pid_file: /run/nginx.pid, cert_dri: x}")
    text = text.replace("verify_timeout: 45s", "verify_timeout: 0s")
    file = f"{tmp_path}/conf/agent.yaml"
    assert _problems(tmp_path, text) == [
        f"{file}:12:21: error[invalid-duration]: targets.site.verify_timeout: '0s' must be longer than zero"
        " (write a whole number above zero and a unit)",
        f"{file}:14:67: error[schema-unknown-field]: unknown key `cert_dri` in targets.edge-nginx.nginx"
        " (allowed keys: cert_dir, pid_file, test_command, reload_command, binary)",
    ]


def test_two_targets_writing_one_directory_are_refused(tmp_path: Path) -> None:
    text = VALID + "  copy:\n    files: {dir: out}\n"
    assert _problems(tmp_path, text) == [
        f"{tmp_path}/conf/agent.yaml:16:18: error[duplicate-target-dir]: targets.copy writes into 'out', as "
        "targets.site does: they would overwrite each other's files (give each target a directory of its own)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: web-1\nlisten: [oops\n", "error[yaml-syntax]"),
        ("name: Web_1\nlisten: 127.0.0.1:9443\n", "agent.yaml:1:7: error[schema-invalid-value]"),
        (VALID.replace("9443", "99999"), "agent.yaml:2:9: error[invalid-port]"),
        (VALID.replace("targets:", "request_window: 0s\ntargets:"), "agent.yaml:7:17: error[invalid-duration]"),
        (VALID.split("targets:", maxsplit=1)[0] + "targets: {}\n", "agent.yaml:7:10: error[schema-invalid-value]"),
        ("name: web-1\nname: web-2\n", "agent.yaml:2:1: error[yaml-duplicate-key]"),
        ("name: web-1\u202e\n", "error[yaml-forbidden-character]"),
    ],
    ids=["syntax", "bad-name", "port", "zero-window", "no-targets", "duplicate-key", "bidi"],
)
def test_every_problem_has_a_position(tmp_path: Path, text: str, expected: str) -> None:
    problems = _problems(tmp_path, text)
    assert any(expected in problem for problem in problems), problems


def test_missing_keys_are_listed(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "name: web-1\n")
    assert any("missing required key `listen`" in p and "allowed keys" in p for p in problems)
    assert any("missing required key `tls`" in p for p in problems)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(tmp_path / "missing.yaml")
    assert caught.value.code == "agent-config-invalid"
    assert "--config" in caught.value.hint


def test_the_environment_check_names_variables_never_values() -> None:
    env = {
        "CERTRECONCILE_DATABASE_URL": "postgresql://u:secret@db/x",
        "BAO_TOKEN": "s.canary",
        "HOME": "/root",
        "PGPASSWORD": "",
    }
    assert forbidden_settings(env) == ["CERTRECONCILE_DATABASE_URL", "BAO_TOKEN"]
    with pytest.raises(ConfigError) as caught:
        check_environment(env)
    assert caught.value.code == "agent-environment-forbidden"
    assert "secret" not in caught.value.one_line() and "canary" not in caught.value.one_line()
    check_environment({"HOME": "/root", "PATH": "/usr/bin"})


def test_the_example_in_examples_agent_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "agent" / "agent.yaml"
    config = load_agent_config(example)
    assert config.name == "web-1"
    assert sorted(config.targets) == ["edge-nginx", "local-files"]
    assert config.tls.key_file == Path("/var/lib/certreconcile-agent/agent.key")
    assert config.tls.ca_file == example.parent / "fleet-ca.crt"

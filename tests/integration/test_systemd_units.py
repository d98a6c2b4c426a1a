"""The systemd units of packaging/systemd/: `systemd-analyze verify` passes without a warning, the
hardening is there (and `systemd-analyze security --offline` rates it), the agent's unit carries no
database or KMS settings, and the sysusers file creates the agent's user.

`verify` needs ExecStart's binary to exist: the units name /usr/bin/certreconcile (where a distribution
package or `pip install --prefix /usr` puts it); the test verifies copies in which that one path is
replaced by the certreconcile installed beside the interpreter running the tests, and nothing else.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certreconcile.agent.environment import FORBIDDEN_VARIABLES
from helpers import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
RUN = "certreconcile-run.service"
AGENT = "certreconcile-agent.service"
DROP_IN = "certreconcile-agent-targets.conf.example"
INSTALLED = "/usr/bin/certreconcile"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every directive, in order (systemd allows a key more than once)."""
    section, found = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def service(name: str) -> dict[str, str]:
    return {k: v for s, k, v in directives((UNITS / name).read_text()) if s == "Service"}


def certreconcile_binary() -> str:
    beside = Path(sys.executable).parent / "certreconcile"
    path = str(beside) if beside.exists() else shutil.which("certreconcile")
    assert path, "certreconcile is not installed beside the test interpreter (make venv installs it)"
    return path


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at the installed certreconcile, and the agent's drop-in in place."""
    binary = certreconcile_binary()
    for name in (RUN, AGENT):
        text = (UNITS / name).read_text()
        assert text.count(INSTALLED) == 1, f"{name}: ExecStart should name {INSTALLED} once"
        (tmp_path / name).write_text(text.replace(INSTALLED, binary))
    drop_ins = tmp_path / f"{AGENT}.d"
    drop_ins.mkdir()
    shutil.copy(UNITS / DROP_IN, drop_ins / "targets.conf")
    return tmp_path


def test_units_pass_systemd_analyze_verify(unit_dir: Path) -> None:
    analyze = require_binary("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", *(str(unit_dir / name) for name in (RUN, AGENT))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", "warnings (unknown keys, bad values):\n" + result.stderr


def test_verify_catches_a_mistake(unit_dir: Path) -> None:
    """The check above can fail: a misspelled directive in the drop-in is reported."""
    analyze = require_binary("systemd-analyze")
    with (unit_dir / f"{AGENT}.d" / "targets.conf").open("a") as drop_in:
        drop_in.write("ReadWritePath=/srv/oops\n")
    result = subprocess.run(
        [analyze, "verify", str(unit_dir / AGENT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Unknown key" in result.stderr, result.stderr


@pytest.mark.parametrize("name", [RUN, AGENT])
def test_units_are_hardened(name: str, unit_dir: Path) -> None:
    settings = service(name)
    for key, value in HARDENING.items():
        assert settings.get(key) == value, f"{name}: {key}={settings.get(key)!r}, want {value!r}"
    assert settings.get("DynamicUser") == "yes" or settings.get("User") not in (None, "", "root", "0")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["ExecStart"].startswith(f"{INSTALLED} ")
    analyze = require_binary("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit_dir / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert level, result.stdout[-2000:] + result.stderr
    assert float(level.group(1)) <= 2.5, f"{name}: exposure {level.group(1)} (systemd-analyze security)"


def test_agent_unit_holds_no_database_or_kms_settings() -> None:
    entries = directives((UNITS / AGENT).read_text()) + directives((UNITS / DROP_IN).read_text())
    keys = {key for _, key, _ in entries}
    assert "EnvironmentFile" not in keys
    assert "LoadCredential" not in keys and "SetCredential" not in keys
    settings = service(AGENT)
    assert settings["ExecStart"] == f"{INSTALLED} agent --config /etc/certreconcile/agent.yaml"
    environment = " ".join(value for _, key, value in entries if key == "Environment")
    assert not re.search(r"DATABASE|KMS|VAULT|BAO|AWS|GOOGLE", environment), environment
    unset = settings["UnsetEnvironment"].split()
    assert {"CERTRECONCILE_DATABASE_URL", "CERTRECONCILE_LOCAL_KMS_KEY_FILE", "VAULT_TOKEN"} <= set(unset)
    assert set(FORBIDDEN_VARIABLES) <= set(unset), "the unit strips every variable the agent refuses to start with"
    writable = [value for _, key, value in entries if key == "ReadWritePaths"]
    assert writable == ["/etc/nginx/certs /etc/haproxy/certs"], "only the drop-in opens target folders"


def test_run_unit_reads_its_settings_from_a_root_only_file() -> None:
    settings = service(RUN)
    assert settings["EnvironmentFile"] == "/etc/certreconcile/run.env"
    assert "--git ${CERTRECONCILE_GIT_URL}" in settings["ExecStart"]
    assert "ReadWritePaths" not in settings  # its state directory only (StateDirectory=)
    assert settings["StateDirectory"] == "certreconcile"


def test_sysusers_creates_the_agent_user(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(UNITS / "certreconcile-agent.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("certreconcile-agent:"))
    assert user.endswith(":/var/lib/certreconcile-agent:/usr/sbin/nologin")
    assert service(AGENT)["User"] == "certreconcile-agent"

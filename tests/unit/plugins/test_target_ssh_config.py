"""The ssh target's declaration without a server: validation, the factory, the remote command's quoting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from certreconcile.errors import DesiredStateError
from certreconcile.plugins.registry import PluginContext, create_target
from certreconcile.plugins.targets.ssh import SshTarget, remote_command
from engine import cert, desired_doc, load

SSH = {"host": "web-1.example.com", "user": "deploy", "known_hosts": "ssh/known_hosts", "key_file": "/k", "dir": "/c"}


def _load(tmp_path: Path, **config: Any) -> Any:
    targets = {"web-1": {"ssh": {**SSH, **config}, "verify": "web-1.example.com:443"}}
    return load(tmp_path / "d", desired_doc([cert("shop", targets=["web-1"])], targets=targets))


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"key_file": None}, "key_file or agent"),
        ({"agent": True}, "key_file or agent"),
        ({"key_file": None, "agent": True, "key_passphrase_env": "P"}, "key_passphrase_env goes with key_file"),
        ({"dir": "relative/certs"}, "dir"),
        ({"dir": "//"}, "filesystem root"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"host": "web 1"}, "host"),
        ({"user": "a;b"}, "user"),
        ({"known_hosts": None}, "known_hosts"),
        ({"reload_command": "systemctl 'reload"}, "invalid-command"),
        ({"trust_on_first_use": True}, "trust_on_first_use"),
    ],
)
def test_declarations_that_cannot_work_are_refused(tmp_path: Path, change: dict[str, Any], word: str) -> None:
    config = {key: value for key, value in {**SSH, **change}.items() if value is not None}
    targets = {"web-1": {"ssh": config}}
    with pytest.raises(DesiredStateError) as caught:
        load(tmp_path / "d", desired_doc([cert("shop", targets=["web-1"])], targets=targets))
    assert word in str(caught.value.diagnostics)


def test_the_factory_builds_the_target_without_io(tmp_path: Path) -> None:
    desired = _load(tmp_path, port=2222, reload_command="systemctl reload nginx")
    target = create_target(desired.targets["web-1"], PluginContext(tmp_path / "d", tmp_path / "data", env={}))
    assert isinstance(target, SshTarget)
    assert target.where == "deploy@web-1.example.com:2222"
    assert target.folder("shop") == "/c/shop"


def test_an_agent_alone_is_a_credential(tmp_path: Path) -> None:
    desired = _load(tmp_path, key_file=None, agent=True)
    assert desired.targets["web-1"].config.agent is True


@pytest.mark.parametrize(
    ("declared", "sent"),
    [
        ("systemctl reload nginx", "systemctl reload nginx"),
        ("touch '/tmp/$HOME'", "touch '/tmp/$HOME'"),
        ("reload; rm -rf /", "'reload;' rm -rf /"),
        ('sh -c "a && b"', "sh -c 'a && b'"),
    ],
)
def test_the_remote_command_is_quoted_word_by_word(declared: str, sent: str) -> None:
    assert remote_command(declared) == sent


def test_a_missing_asyncssh_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['asyncssh'] = None\n"
        "from pathlib import Path\n"
        "from certreconcile.desired.model import TargetSpec\n"
        "from certreconcile.errors import TargetError\n"
        "from certreconcile.plugins.registry import PluginContext\n"
        "from certreconcile.plugins.targets.ssh_config import SshTargetConfig, create\n"
        f"config = SshTargetConfig(**{SSH!r})\n"
        "spec = TargetSpec(name='web-1', kind='ssh', config=config, fingerprint='x')\n"
        "try:\n"
        "    create(spec, PluginContext(Path('.'), Path('.'), env={}))\n"
        "except TargetError as exc:\n"
        "    print(exc.code, exc.hint)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "target-sdk-missing pip install 'certreconcile[ssh]'"

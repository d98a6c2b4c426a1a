"""The exec and lexicon DNS-01 kinds: what their contract suite does not show.

exec: the program gets lego's arguments and a small environment, its failures are one line with
the passed secrets masked, a hung program is killed with its children. lexicon: an unknown
provider, a missing secret and an API that does not answer are clear DnsErrors.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.exec_config import ExecConfig
from certreconcile.plugins.dns01.exec_program import ExecProvider
from certreconcile.plugins.dns01.lexicon_config import LexiconConfig
from certreconcile.plugins.dns01.lexicon_provider import LexiconProvider
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.ports import DnsTxtRecord
from dns_servers import free_dual_port

RECORD = DnsTxtRecord("_acme-challenge.shop.example.com", "dGhlLXZhbHVlLW9mLXRoZS1jaGFsbGVuZ2UtcmVjb3Jk")
SECRET = "s3cret-token-value-0123456789"
WAITER = PropagationWaiter(("127.0.0.1:53",), timedelta(seconds=1))


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _exec(program: Path, process_env: dict[str, str] | None = None, **config: object) -> ExecProvider:
    settings: dict[str, object] = {"program": str(program), "pass_env": ("HOOK_TOKEN",), **config}
    default_env = {"PATH": os.environ["PATH"], "HOOK_TOKEN": SECRET, "CERTRECONCILE_DATABASE_URL": "postgresql://x"}
    return ExecProvider(
        "hook",
        ExecConfig.model_validate(settings),
        program=program,
        env=default_env if process_env is None else process_env,
        propagation=WAITER,
        propagation_timeout=timedelta(seconds=90),
    )


def test_exec_passes_lego_arguments_and_a_small_environment(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    program = _script(tmp_path, f'printf "%s|" "$@" > {seen}\necho >> {seen}\nenv | sort >> {seen}\n')
    _exec(program, {"PATH": os.environ["PATH"], "HOOK_TOKEN": SECRET, "CERTRECONCILE_DATABASE_URL": "pg://x",
                        "OTHER_TSIG": "other"}, env={"ZONE": "example.com"}).present(RECORD)  # fmt: skip
    arguments, _, environment = seen.read_text().partition("\n")
    assert arguments.split("|")[:3] == ["present", RECORD.fqdn + ".", RECORD.value]
    names = {line.partition("=")[0] for line in seen.read_text().splitlines()[1:]}
    assert {"EXEC_PATH", "EXEC_PROPAGATION_TIMEOUT", "EXEC_POLLING_INTERVAL", "ZONE", "HOOK_TOKEN"} <= names
    assert "EXEC_PROPAGATION_TIMEOUT=90" in environment
    assert "CERTRECONCILE_DATABASE_URL" not in names and "OTHER_TSIG" not in names  # never another secret


def test_exec_failure_is_one_line_with_the_secret_masked(tmp_path: Path) -> None:
    program = _script(tmp_path, f'echo "starting"\necho "auth failed for token {SECRET}" >&2\nexit 3\n')
    with pytest.raises(DnsError) as raised:
        _exec(program).cleanup(RECORD)
    error = raised.value
    assert error.code == "dns-exec-failed"
    assert "exited 3" in error.message and "auth failed for token ***" in error.message
    assert SECRET not in error.one_line() and "\n" not in error.one_line()


def test_exec_missing_program_and_missing_secret(tmp_path: Path) -> None:
    with pytest.raises(DnsError) as raised:
        _exec(tmp_path / "absent.sh").present(RECORD)
    assert raised.value.code == "dns-exec-not-found"
    program = _script(tmp_path, "exit 0\n")
    with pytest.raises(DnsError) as raised:
        _exec(program, {"PATH": os.environ["PATH"]}).present(RECORD)
    assert raised.value.code == "dns-credentials-missing" and "HOOK_TOKEN" in raised.value.message


def test_exec_a_hung_program_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    program = _script(tmp_path, f"sleep 300 &\necho $! > {pid_file}\nwait\n")
    provider = _exec(program)
    provider._timeout = 0.3  # a declaration says whole seconds at least; no test waits that long
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-exec-timeout"
    child = int(pid_file.read_text())
    assert _dies(Path(f"/proc/{child}/status"))


def _dies(status: Path, within: float = 5.0) -> bool:
    """Whether the process of this /proc status file is gone (or a zombie awaiting its reaper) within ``within`` s.

    SIGKILL is delivered asynchronously: the grandchild, reparented to init when its shell died, can still read
    ``State: R`` for a moment after ``killpg`` returned. Left alive, it would sleep its 300 s: this fails.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            if "State:\tZ" in status.read_text():
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


# ---------------------------------------------------------------- lexicon


def _lexicon(provider: str = "powerdns", env: dict[str, str] | None = None, **options: object) -> LexiconProvider:
    config = LexiconConfig(
        provider=provider, zone="example.com", options=dict(options), credentials_env={"auth_token": "PDNS_KEY"}
    )
    return LexiconProvider("lex", config, env={"PDNS_KEY": SECRET} if env is None else env, propagation=WAITER)


def test_lexicon_unknown_provider_and_missing_secret() -> None:
    with pytest.raises(DnsError) as raised:
        _lexicon("no_such_provider").present(RECORD)
    assert raised.value.code == "dns-lexicon-provider-unknown" and "no_such_provider" in raised.value.message
    with pytest.raises(DnsError) as raised:
        _lexicon(env={}, pdns_server="http://127.0.0.1:1").present(RECORD)
    assert raised.value.code == "dns-credentials-missing" and "PDNS_KEY" in raised.value.message


def test_lexicon_an_api_that_does_not_answer() -> None:
    provider = _lexicon(pdns_server=f"http://127.0.0.1:{free_dual_port()}")  # nothing listens there
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-server-unreachable", raised.value.one_line()
    assert SECRET not in raised.value.one_line()


def test_lexicon_keeps_request_logs_out_of_debug_output() -> None:
    """Some lexicon providers send their key in the URL: urllib3 and lexicon must not log requests."""
    import logging

    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in ("lexicon", "urllib3", "requests")}
    root.setLevel(logging.DEBUG)
    try:
        for name in saved[1]:
            logging.getLogger(name).setLevel(logging.NOTSET)
        with pytest.raises(DnsError):
            _lexicon(pdns_server=f"http://127.0.0.1:{free_dual_port()}").present(RECORD)
        assert all(logging.getLogger(name).getEffectiveLevel() >= logging.INFO for name in saved[1])
    finally:
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)

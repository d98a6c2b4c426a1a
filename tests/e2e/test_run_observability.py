"""`certreconcile run` as an operator watches it: JSON log lines with their fields, /healthz and /readyz.

The real command as a subprocess, on the session's PostgreSQL, a local CA and a files target.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from e2e.test_run import wait_for, write_desired


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_run_logs_one_json_object_per_line_with_the_certificate_fields(tmp_path: Path, cli_env: dict[str, str]) -> None:
    desired = write_desired(tmp_path)
    command = [sys.executable, "-m", "certreconcile", "run", "--dir", str(desired), "--once", "--apply-changes"]
    done = subprocess.run(
        [*command, "--log-format", "json", "--log-level", "debug"],
        env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line), line
        assert line["level"] in ("debug", "info", "warning", "error")
    issued = [line for line in lines if line["logger"] == "certreconcile.apply" and line.get("step") == "issue"
              and "serial" in line]  # fmt: skip
    assert sorted(line["certificate"] for line in issued) == ["api", "shop"]
    assert all(line["issuer"] == "quick" and line["message"].endswith(f"serial {line['serial']} by quick")
               for line in issued)  # fmt: skip
    serials = {line["certificate"]: line["serial"] for line in issued}
    verified = [line for line in lines if line.get("step") == "verify"]
    assert sorted((line["certificate"], line["target"], line["serial"]) for line in verified) == sorted(
        (name, "web", serial) for name, serial in serials.items()
    )  # the serial and the target follow the change into the deployment's thread
    results = [line for line in lines if line.get("outcome") == "done" and line.get("actor")]
    assert sorted((line["certificate"], line["step"], line["serial"]) for line in results) == sorted(
        (name, "issue", serial) for name, serial in serials.items()
    )
    (cycle,) = [line for line in lines if line.get("step") == "cycle"]
    assert cycle["outcome"] == "success" and cycle["message"].startswith("cycle success: 2 done")
    assert any(line["level"] == "debug" for line in lines)  # --log-level debug
    keys = [path.read_text() for path in (desired / "deploy" / "web").rglob("*key*.pem")]
    assert keys and not any(key.strip().splitlines()[1] in done.stderr for key in keys)  # no key material

    quiet = subprocess.run(
        [*command, "--log-format", "json", "--log-level", "warning"],
        env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    quiet_lines = [json.loads(line) for line in quiet.stderr.splitlines()]
    assert all(line["level"] in ("warning", "error") for line in quiet_lines), quiet_lines
    assert not any(line.get("step") == "cycle" for line in quiet_lines)  # the info summary is filtered out


def _reader(process: subprocess.Popen[str], sink: list[dict[str, Any]]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        sink.append(json.loads(line))


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http on loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_run_serves_healthz_and_readyz_beside_the_metrics(tmp_path: Path, cli_env: dict[str, str]) -> None:
    desired = write_desired(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "certreconcile", "run", "--dir", str(desired), "--apply-changes", "--interval", "1h",
         "--metrics-port", "0", "--log-format", "json"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=_reader, args=(process, lines), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.get("step") == "cycle" for line in lines), timeout=60)
        serving = next(line["message"] for line in lines if line["message"].startswith("serving metrics on "))
        base = serving.split()[3].removesuffix("/metrics")
        assert _get(f"{base}/healthz") == (200, {"status": "alive"})
        status, ready = _get(f"{base}/readyz")
        assert status == 200, ready
        assert (ready["status"], ready["database"], ready["last_cycle_outcome"]) == ("ready", "reachable", "success")
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310 - loopback
            page = response.read().decode()
        assert 'certreconcile_certificate_ready_status{condition="True",issuer="quick",issuer_kind="local_ca",' in page
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    assert lines[-1]["message"] == "stopped"

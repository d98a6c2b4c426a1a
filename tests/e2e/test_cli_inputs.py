"""The command line's inputs: every bad desired state, usage errors, help, schema, init, colour.

Most cases run in-process (``typer.testing.CliRunner`` on ``certreconcile.cli.main.app``, or
``certreconcile.cli.main.main``), which is ~50x faster than a subprocess per case; a few run the
real ``python -m certreconcile`` entry point to prove it behaves the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import click
import psycopg
import pytest
import typer
from typer.testing import CliRunner, Result

from certreconcile.cli.main import app, main
from e2e.conftest import Runner
from e2e.test_cli_cycle import snapshot

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "desired-state"
INVALID = ROOT / "tests" / "data" / "invalid"
CASES = sorted(path for path in INVALID.iterdir() if path.is_dir())


def stratified(cases: list[Path], per_class: int = 2) -> list[Path]:
    """The first and last case of each class (the name up to its first "-"): every class, in bounded time.

    All cases yield their diagnostics in tests/unit/desired/test_corpus.py; ``CERTRECONCILE_SOAK=1``
    runs every one of them through ``plan`` and ``apply`` here too (about 2 minutes for 240 cases).
    """
    if os.environ.get("CERTRECONCILE_SOAK") == "1":
        return cases
    classes: dict[str, list[Path]] = {}
    for case in cases:
        classes.setdefault(case.name.split("-", 1)[0], []).append(case)
    sample = {case for members in classes.values() for case in (members[0], members[-1])[:per_class]}
    return sorted(sample | {case for case in cases if case.name in ALWAYS_THROUGH_THE_CLI})


# The hostile cases that matter most, whatever the sample: bombs, nesting, homographs, metadata URLs...
ALWAYS_THROUGH_THE_CLI = frozenset({
    "bomb-billion-laughs", "nest-block-sequences-10k", "nest-flow-lists-10k", "idn-cyrillic-a-in-example",
    "webhook-metadata-ipv4", "webhook-decimal-loopback", "path-dir-dotdot-etc", "tag-python-object-apply",
    "yaml-nul-truncates", "enc-utf16le-bom", "ctrl-rlo-trojan-source", "shell-name-semicolon",
})


CLI_CASES = stratified(CASES)
DIAGNOSTIC = re.compile(r"^(\S.*?:\d+:\d+: error\[[a-z0-9-]+\])", re.MULTILINE)

Invoke = Callable[..., Result]


def expected_lines(case: Path) -> list[str]:
    return [line for line in (case / "expected.txt").read_text().splitlines() if line.strip()]


def copy_case(case: Path, destination: Path) -> Path:
    shutil.copytree(case, destination, symlinks=True)
    return destination


@pytest.fixture
def base_env(cli_env: dict[str, str]) -> dict[str, str | None]:
    """The CLI's environment for in-process runs (``None`` removes a variable while the command runs)."""
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("CERTRECONCILE_")}
    env.update({key: value for key, value in cli_env.items() if key.startswith("CERTRECONCILE_")})
    env.update({"NO_COLOR": "1", "USER": cli_env["USER"], "CERTRECONCILE_DATA_DIR": None})
    return env


@pytest.fixture
def invoke(base_env: dict[str, str | None]) -> Invoke:
    runner = CliRunner()

    def run(*args: str, check_code: int | None = None, env: Mapping[str, str | None] | None = None) -> Result:
        result = runner.invoke(app, list(args), env={**base_env, **(env or {})}, catch_exceptions=True)
        if check_code is not None:
            assert result.exit_code == check_code, (result.exit_code, result.output, result.exception)
        return result

    return run


@pytest.fixture
def desired_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES, tmp_path / "desired", ignore=shutil.ignore_patterns(".certreconcile")))


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``certreconcile.cli.main.main`` in-process: the real wrapper (usage errors → 1), without a subprocess."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


# ------------------------------------------------------------------ the invalid corpus


def assert_rejected(result_code: int, stdout: str, stderr: str, case: Path) -> None:
    expected = expected_lines(case)
    assert result_code == 1, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert DIAGNOSTIC.findall(stderr) == expected, stderr
    for line in expected:
        assert any(got.startswith(line + ": ") for got in stderr.splitlines()), (line, stderr)
    problems = "problem" if len(expected) == 1 else "problems"
    assert f"error[desired-state-invalid]: {len(expected)} {problems} in the desired state" in stderr
    assert stdout == ""


def test_corpus_is_there() -> None:
    assert len(CASES) >= 200
    assert len({case.name.split("-", 1)[0] for case in CLI_CASES}) >= 25


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda path: path.name)
def test_invalid_desired_state_is_refused_by_plan_and_apply(
    case: Path, invoke: Invoke, database_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    directory = copy_case(case, tmp_path / "case")
    before = snapshot(database_url)
    planned = invoke("plan", "--dir", str(directory))
    assert_rejected(planned.exit_code, planned.stdout, planned.stderr, case)
    applied = invoke("apply", "--dir", str(directory), "--auto-approve")
    assert_rejected(applied.exit_code, applied.stdout, applied.stderr, case)
    assert snapshot(database_url) == before
    # Nothing else was touched either: no embedded database, no KMS key.
    assert not (directory / ".certreconcile").exists()
    assert not Path(cli_env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"]).exists()


def test_invalid_desired_state_through_the_real_entry_point(
    run_cli: Runner, database_url: str, tmp_path: Path
) -> None:
    case = INVALID / "schema-several-errors"
    directory = copy_case(case, tmp_path / "case")
    before = snapshot(database_url)
    for args in (("plan", "--dir", str(directory)), ("apply", "--dir", str(directory), "--auto-approve")):
        result = run_cli(*args)
        assert_rejected(result.returncode, result.stdout, result.stderr, case)
    assert snapshot(database_url) == before


# ------------------------------------------------------------------ exit codes and usage errors


def test_detailed_exitcode_is_1_on_errors(
    invoke: Invoke, desired_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = invoke("plan", "--dir", str(tmp_path / "missing"), "--detailed-exitcode", check_code=1)
    assert "error[dir-missing]" in missing.stderr
    invalid = invoke("plan", "--dir", str(INVALID / "unknown-issuer"), "--detailed-exitcode", check_code=1)
    assert "error[unknown-issuer]" in invalid.stderr
    for result in (missing, invalid):
        assert result.stdout == ""
        assert result.exception is None or isinstance(result.exception, SystemExit)
    # a bad --format is a usage error (click's): the real entry point makes it 1, never 2 ("changes")
    code, out, err = run_main(["plan", "--dir", str(desired_dir), "--format", "xml", "--detailed-exitcode"], capsys)
    assert code == 1
    assert out == ""
    assert "Invalid value for '--format'" in err
    assert "'xml' is not one of 'text', 'markdown', 'json'" in err


def test_detailed_exitcode_is_1_when_the_database_is_unreachable(invoke: Invoke, desired_dir: Path) -> None:
    result = invoke(
        "plan",
        "--dir",
        str(desired_dir),
        "--detailed-exitcode",
        env={"CERTRECONCILE_DATABASE_URL": "postgresql://nobody:secret-pw@127.0.0.1:1/nothing?connect_timeout=2"},
        check_code=1,
    )
    assert re.search(r"^error\[[a-z0-9-]+\]: ", result.stderr, re.M), result.stderr
    assert "Traceback" not in result.output
    assert "secret-pw" not in result.output


def test_detailed_exitcode_distinguishes_changes(invoke: Invoke, desired_dir: Path) -> None:
    invoke("plan", "--dir", str(desired_dir), "--detailed-exitcode", check_code=2)
    invoke("plan", "--dir", str(desired_dir), check_code=0)


USAGE_ERRORS = {
    "unknown-option": ["plan", "--bogus"],
    "unknown-command": ["frobnicate"],
    "missing-argument": ["revoke"],
    "option-needs-value": ["plan", "--format"],
    "out-of-range": ["apply", "--concurrency", "0"],
}


@pytest.mark.parametrize("argv", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_1_not_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 1, (out, err)
    assert "Traceback" not in out + err


@pytest.mark.parametrize("argv", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_say_what_is_wrong(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(argv, capsys)
    assert code == 1
    assert "internal-error" not in err
    assert "a bug in certreconcile" not in err
    assert "Usage:" in err or "Error:" in err or "error[usage]" in err, err


def test_no_arguments_shows_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = run_main([], capsys)
    assert "internal-error" not in err
    assert "Usage:" in out + err


def test_unknown_option_through_the_real_entry_point(run_cli: Runner) -> None:
    result = run_cli("plan", "--bogus", check_code=1)
    assert "Traceback" not in result.stdout + result.stderr


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group) or hasattr(root, "commands")
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in sorted(getattr(group, "commands", {}).items()):
            paths.append([*prefix, name])
            walk(command, [*prefix, name])

    walk(root, [])
    return paths


COMMAND_PATHS = _command_paths()
WITHOUT_EXAMPLE: set[str] = set()  # every command shows an example


def test_every_command_is_listed() -> None:
    names = {" ".join(path) for path in COMMAND_PATHS}
    assert names >= {"", "validate", "plan", "apply", "status", "audit", "revoke", "rotate", "schema", "init",
                     "db", "db upgrade"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            path,
            marks=pytest.mark.xfail(
                strict=True,
                reason=f"BUG/doc gap: `certreconcile {' '.join(path)} --help` shows no example "
                "(docstring in cli/main.py has no 'Example:' line)",
            ),
        )
        if " ".join(path) in WITHOUT_EXAMPLE
        else path
        for path in COMMAND_PATHS
    ],
    ids=lambda path: " ".join(path) or "certreconcile",
)
def test_help_of_every_command_exits_0_with_an_example(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main([*path, "--help"], capsys)
    assert code == 0, err
    assert "Usage:" in out
    assert re.search(r"\bexamples?:", out, re.IGNORECASE), out


# ------------------------------------------------------------------ validate and schema


def test_validate_examples_exits_0(invoke: Invoke) -> None:
    result = invoke("validate", "--dir", str(EXAMPLES), check_code=0)
    assert result.stdout.startswith("Valid: 4 certificates, 2 issuers, 2 targets.")
    assert result.stderr == ""


def test_validate_a_corpus_case_exits_1(invoke: Invoke) -> None:
    case = INVALID / "duplicate-name-across-files"
    result = invoke("validate", "--dir", str(case), check_code=1)
    assert DIAGNOSTIC.findall(result.stderr) == expected_lines(case)
    assert not result.stdout


def test_validate_refuses_values_that_cannot_work(invoke: Invoke) -> None:
    case = INVALID / "value-checks"
    result = invoke("validate", "--dir", str(case), check_code=1)
    assert DIAGNOSTIC.findall(result.stderr) == expected_lines(case)
    for line in result.stderr.splitlines()[:-1]:
        assert re.search(r"\(.+\)$", line), line  # every problem ends with its hint
    assert not result.stdout


HOOK = """\
issuers: {ca: {local_ca: {}}}
targets:
  hook:
    webhook: {url: "https://hook.example.test", secret_env: CERTRECONCILE_TEST_HOOK_SECRET}
certificates:
  - {name: shop, domains: [shop.example.com], issuer: ca, targets: [hook]}
"""


def test_plan_and_apply_refuse_an_unset_env_secret_before_issuing(
    invoke: Invoke, tmp_path: Path, database_url: str
) -> None:
    directory = tmp_path / "desired"
    directory.mkdir()
    (directory / "c.yaml").write_text(HOOK)
    assert invoke("validate", "--dir", str(directory), check_code=0).stderr == ""  # files alone: valid
    before = snapshot(database_url)
    expected = "c.yaml:4:61: error[env-unset]: targets.hook.webhook.secret_env: the environment variable"
    for args in (("plan",), ("apply", "--auto-approve")):
        result = invoke(*args, "--dir", str(directory), check_code=1)
        assert result.stderr.startswith(expected), result.stderr
        assert "(export CERTRECONCILE_TEST_HOOK_SECRET " in result.stderr
    assert snapshot(database_url) == before
    # A pull-request job has no secrets: --allow-unset-secrets shows the same finding as a warning.
    warned = invoke("plan", "--dir", str(directory), "--allow-unset-secrets", "--detailed-exitcode", check_code=2)
    assert "c.yaml:4:61: error[env-unset]" in warned.stdout
    assert "apply will refuse this plan until it is set" in warned.stdout
    assert snapshot(database_url) == before
    secret = {"CERTRECONCILE_TEST_HOOK_SECRET": "s3cret"}
    planned = invoke("plan", "--dir", str(directory), env=secret, check_code=0)
    assert "shop" in planned.stdout
    assert "s3cret" not in planned.stdout + planned.stderr


def test_schema_prints_the_committed_schema(invoke: Invoke) -> None:
    """The committed schema (built-in kinds), plus the kinds installed from other packages (tests/plugins/)."""
    from certreconcile.desired.schema import render_json_schema

    result = invoke("schema", check_code=0)
    committed = (ROOT / "schemas" / "desired-state.schema.json").read_text()
    assert result.stdout == render_json_schema()
    assert committed == render_json_schema(builtin_only=True)
    printed, builtin = json.loads(result.stdout), json.loads(committed)
    assert set(builtin["$defs"]) <= set(printed["$defs"])
    targets = printed["$defs"]["TargetEntry"]["properties"]
    assert builtin["$defs"]["TargetEntry"]["properties"].items() <= targets.items()


# ------------------------------------------------------------------ init


def _key_id(key_file: Path) -> str:
    master = base64.b64decode(key_file.read_text().strip())
    return "local:" + hashlib.sha256(b"certreconcile-key-id" + master).hexdigest()[:16]


def test_init_scaffold_validates_plans_and_applies(
    invoke: Invoke, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    directory = tmp_path / "certs"
    no_key_file = {"CERTRECONCILE_LOCAL_KMS_KEY_FILE": None, "CERTRECONCILE_DATA_DIR": None}
    created = invoke("init", str(directory), env=no_key_file, check_code=0)
    assert "Next: certreconcile plan --dir" in created.stdout

    example = directory / "certificates.yaml"
    assert example.read_text().startswith("# yaml-language-server: $schema=")
    assert ".certreconcile/" in (directory / ".gitignore").read_text().splitlines()
    key_file = directory / ".certreconcile" / "local-kms.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text().strip(), validate=True)) == 32
    key_text = key_file.read_text()

    invoke("validate", "--dir", str(directory), env=no_key_file, check_code=0)
    plan = invoke("plan", "--dir", str(directory), "--detailed-exitcode", env=no_key_file, check_code=2)
    assert "+ issue web" in plan.stdout
    applied = invoke("apply", "--dir", str(directory), "--auto-approve", env=no_key_file, check_code=0)
    assert "Apply complete: 1 done, 0 skipped, 0 failed." in applied.stdout
    invoke("plan", "--dir", str(directory), "--detailed-exitcode", env=no_key_file, check_code=0)

    # apply sealed the key with the master key init created, and created no other one.
    assert key_file.read_text() == key_text
    assert not Path(cli_env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"]).exists()
    assert sorted(p.name for p in directory.rglob("*.key")) == ["local-kms.key"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT key_ref FROM Certificate WHERE name = 'web'").fetchone()
    assert row is not None
    assert json.loads(row[0])["key_id"] == _key_id(key_file)
    deployed = directory / ".certreconcile" / "deploy" / "web" / "privkey.pem"
    assert stat.S_IMODE(deployed.stat().st_mode) == 0o600


def test_init_twice_refuses_and_keeps_the_key(invoke: Invoke, tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    env = {"CERTRECONCILE_LOCAL_KMS_KEY_FILE": None, "CERTRECONCILE_DATA_DIR": None}
    invoke("init", str(directory), env=env, check_code=0)
    key_file = directory / ".certreconcile" / "local-kms.key"
    example = directory / "certificates.yaml"
    before = (key_file.read_text(), example.read_text(), (directory / ".gitignore").read_text())
    again = invoke("init", str(directory), env=env, check_code=1)
    assert "error[init-not-empty]" in again.stderr
    assert (key_file.read_text(), example.read_text(), (directory / ".gitignore").read_text()) == before


def test_init_and_apply_agree_on_the_key_with_a_data_dir(invoke: Invoke, tmp_path: Path, database_url: str) -> None:
    directory = tmp_path / "certs"
    env = {"CERTRECONCILE_LOCAL_KMS_KEY_FILE": None, "CERTRECONCILE_DATA_DIR": str(tmp_path / "data")}
    invoke("init", str(directory), env=env, check_code=0)
    invoke("apply", "--dir", str(directory), "--auto-approve", env=env, check_code=0)
    keys = sorted(tmp_path.rglob("local-kms.key"))
    assert len(keys) == 1, keys
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT key_ref FROM Certificate WHERE name = 'web'").fetchone()
    assert row is not None
    assert json.loads(row[0])["key_id"] == _key_id(keys[0])


# ------------------------------------------------------------------ colour


def run_on_terminal(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run the real command with stdin, stdout and stderr on a pseudo-terminal; return all it printed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "certreconcile", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            close_fds=True,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=120)
    finally:
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def terminal_env(cli_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in cli_env.items() if k != "NO_COLOR"}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120"})
    return env


def test_terminal_has_colour_without_no_color(terminal_env: dict[str, str], desired_dir: Path, tmp_path: Path) -> None:
    """The control: on a terminal, without NO_COLOR, the plan is coloured (so the tests below mean something)."""
    output = run_on_terminal(["plan", "--dir", str(desired_dir)], terminal_env, tmp_path)
    assert "+ issue" in output
    assert "\x1b[" in output


def test_no_color_on_a_terminal_means_no_escape_codes(
    terminal_env: dict[str, str], desired_dir: Path, tmp_path: Path
) -> None:
    env = {**terminal_env, "NO_COLOR": "1"}
    d = str(desired_dir)
    commands = [
        ["plan", "--dir", d],
        ["apply", "--dir", d, "--auto-approve"],
        ["status", "--dir", d],
        ["plan", "--help"],
        ["validate", "--dir", str(INVALID / "schema-several-errors")],
    ]
    outputs = [run_on_terminal(args, env, tmp_path) for args in commands]
    assert "+ issue" in outputs[0]
    assert "Apply complete: 4 done" in outputs[1]
    assert " active " in outputs[2]
    assert "Usage:" in outputs[3]
    assert "error[schema-" in outputs[4]
    for args, output in zip(commands, outputs, strict=True):
        assert "\x1b" not in output, (args, output)


def test_no_escape_codes_when_stdout_is_not_a_terminal(
    run_cli: Runner, cli_env: dict[str, str], invoke: Invoke, desired_dir: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    d = str(desired_dir)
    real = run_cli("plan", "--dir", d, env=env, check_code=0)
    assert "+ issue" in real.stdout
    outputs = [real.stdout + real.stderr]
    unset = {"NO_COLOR": None, "TERM": "xterm-256color"}
    for args in (
        ["apply", "--dir", d, "--auto-approve"],
        ["plan", "--dir", d],
        ["status", "--dir", d],
        ["audit", "--dir", d],
        ["plan", "--help"],
        ["validate", "--dir", str(INVALID / "schema-several-errors")],
    ):
        result = invoke(*args, env=unset)
        outputs.append(result.output)
    assert "Apply complete: 4 done" in outputs[1]
    for output in outputs:
        assert "\x1b" not in output, output


# ------------------------------------------------------------------ named commands: the NAME is acted upon


def _fingerprints(invoke: Invoke, directory: Path) -> dict[str, str]:
    status = json.loads(invoke("status", "--dir", str(directory), "--format", "json", check_code=0).stdout)
    return {c["name"]: c["fingerprint"] for c in status["certificates"]}


def test_rotate_refuses_an_unknown_name(invoke: Invoke, desired_dir: Path, database_url: str) -> None:
    before = snapshot(database_url)
    rotate = invoke("rotate", "no-such-cert", "--dir", str(desired_dir), check_code=1)
    assert "error[name-unknown]" in rotate.stderr
    assert "Traceback" not in rotate.output
    assert snapshot(database_url) == before


def test_revoke_refuses_an_unknown_name(invoke: Invoke, desired_dir: Path, database_url: str) -> None:
    revoke = invoke("revoke", "no-such-cert", "--dir", str(desired_dir), check_code=1)
    assert "error[name-unknown]" in revoke.stderr
    assert "Traceback" not in revoke.output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM Certificate").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM CertAudit").fetchone() == (0,)


def test_revoke_of_an_unknown_name_leaves_no_trace(invoke: Invoke, desired_dir: Path, database_url: str) -> None:
    before = snapshot(database_url)
    invoke("revoke", "no-such-cert", "--dir", str(desired_dir), check_code=1)
    assert snapshot(database_url) == before


def test_rotate_name_rotates_it(invoke: Invoke, desired_dir: Path) -> None:
    invoke("apply", "--dir", str(desired_dir), "--auto-approve", check_code=0)
    before = _fingerprints(invoke, desired_dir)
    rotated = invoke("rotate", "shop", "--dir", str(desired_dir), check_code=0)
    assert "Apply complete: 1 done, 0 skipped, 0 failed." in rotated.stdout
    after = _fingerprints(invoke, desired_dir)
    assert after["shop"] != before["shop"]
    assert {k: v for k, v in after.items() if k != "shop"} == {k: v for k, v in before.items() if k != "shop"}

"""`certreconcile run --git URL --branch B`: follow a branch, apply each new head as its commit.

Real git (a bare repository in tmp as the remote, a clone where the test commits and pushes), real
PostgreSQL, local KMS, local CA, files target; SSH signing keys made by ssh-keygen for
``--require-signed-commits``. Each cycle is one ``run --once`` process: the followed commit is in the
database and the clone in the state directory, so the next process is the next cycle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
import pytest

from e2e.conftest import Runner
from helpers import require_binary

EMAIL = "alice@example.test"


class Remote:
    """A bare repository (the remote) and a work clone that commits and pushes declarations to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        self.deploy = root / "deploy"
        self.url = self.bare.as_uri()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.work, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def push(self, names: list[str], message: str, *, key: Path | None = None, force: bool = False) -> str:
        """Commit the declarations of ``names`` under certs/ (signed with ``key``) and push them to main."""
        certs = self.work / "certs"
        certs.mkdir(exist_ok=True)
        (certs / "base.yaml").write_text(
            "kms: {local: {}}\n"
            "issuers:\n"
            "  internal: {local_ca: {common_name: run git test CA, lifetime: 90d}}\n"
            "targets:\n"
            f"  web: {{files: {{dir: {self.deploy}}}}}\n"
            "policy: {allowed_domains: ['*.example.test']}\n"
        )
        (certs / "certificates.yaml").write_text(
            "certificates:\n"
            + "".join(
                f"  - {{name: {name}, domains: [{name}.example.test], issuer: internal, targets: [web]}}\n"
                for name in names
            )
        )
        self.git("add", "-A")
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key is not None else []
        self.git(*signing, "commit", "-q", "--allow-empty", *(["-S"] if key is not None else []), "-m", message)
        self.git("push", "-q", *(["--force"] if force else []), "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    require_binary("git")
    r = Remote(tmp_path)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(r.bare)], check=True, timeout=60)
    subprocess.run(["git", "init", "-q", "-b", "main", str(r.work)], check=True, timeout=60)
    r.git("config", "user.email", EMAIL)
    r.git("config", "user.name", "Alice")
    r.git("config", "commit.gpgsign", "false")
    r.git("remote", "add", "origin", r.url)
    return r


@pytest.fixture
def git_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """No global or system git configuration; the state directory (clone, local KMS key) under tmp."""
    return {
        **cli_env,
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "CERTRECONCILE_DATA_DIR": str(tmp_path / "state"),
    }


def follow(run_cli: Runner, env: dict[str, str], remote: Remote, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--git", remote.url, "--branch", "main", "--dir", "certs", "--once", *extra, env=env)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def current(url: str) -> list[str]:
    rows = query(url, "SELECT name FROM Certificate WHERE retired_at IS NULL AND status <> 'superseded' ORDER BY 1")
    return [name for (name,) in rows]


def actors(url: str, name: str) -> set[str]:
    return {actor for (actor,) in query(url, f"SELECT actor FROM CertAudit WHERE name = '{name}'")}


def followed(url: str) -> tuple[Any, ...]:
    return query(url, "SELECT git_source, git_commit FROM StateMeta")[0]


def snapshot(url: str) -> dict[str, list[str]]:
    """Every row apply and run write, in a stable order."""
    tables = ("Certificate", "CertAudit", "CertRotation", "Distribution", "ApplyRun", "ApplyStep", "StateMeta")
    return {table: sorted(map(repr, query(url, f"SELECT * FROM {table}"))) for table in tables}


def test_run_git_applies_each_pushed_commit_with_its_sha_as_the_actor(
    run_cli: Runner, git_env: dict[str, str], remote: Remote, database_url: str
) -> None:
    first = remote.push(["shop"], "shop")
    applied = follow(run_cli, git_env, remote)
    assert applied.returncode == 0, applied.stderr
    assert f"following main at {first} ({EMAIL})" in applied.stderr
    assert current(database_url) == ["shop"]
    assert actors(database_url, "shop") == {f"git:{first} {EMAIL}"}
    assert (remote.deploy / "shop" / "fullchain.pem").is_file()
    assert followed(database_url) == (f"{remote.url}#main:certs", first)

    second = remote.push(["shop", "api"], "add api")
    applied = follow(run_cli, git_env, remote)
    assert applied.returncode == 0, applied.stderr
    assert f"(at {second[:12]})" in applied.stderr
    assert current(database_url) == ["api", "shop"]
    assert actors(database_url, "api") == {f"git:{second} {EMAIL}"}
    assert actors(database_url, "shop") == {f"git:{first} {EMAIL}"}  # unchanged: not issued again
    assert followed(database_url)[1] == second

    # No new commit: nothing to do.
    again = follow(run_cli, git_env, remote)
    assert again.returncode == 0, again.stderr
    assert "cycle noop" in again.stderr

    # Another source (here the same repository by its path, not its file:// URL) starts at its head.
    moved = run_cli("run", "--git", str(remote.bare), "--dir", "certs", "--once", env=git_env)
    assert moved.returncode == 0, moved.stderr
    assert f"the database followed {remote.url}#main:certs at {second}" in moved.stderr
    assert followed(database_url) == (f"{remote.bare}#main:certs", second)


def test_run_git_never_goes_back_and_survives_a_failing_fetch(
    run_cli: Runner, git_env: dict[str, str], remote: Remote, database_url: str
) -> None:
    first = remote.push(["shop"], "shop")
    second = remote.push(["shop", "api"], "add api")
    assert follow(run_cli, git_env, remote).returncode == 0
    assert current(database_url) == ["api", "shop"]

    # A force-push rewinds main to the first commit: reported, not applied (api is not retired).
    remote.git("reset", "-q", "--hard", first)
    remote.git("push", "-q", "--force", "origin", "HEAD:main")
    before = snapshot(database_url)
    rewound = follow(run_cli, git_env, remote)
    assert rewound.returncode == 1, rewound.stderr
    assert "error[git-not-fast-forward]" in rewound.stderr
    assert f"from the followed commit {second[:12]} to {first[:12]}" in rewound.stderr
    assert f"(at {second[:12]})" in rewound.stderr  # the followed commit still applies
    assert snapshot(database_url) == before
    assert followed(database_url)[1] == second

    # The remote is unreachable: logged and retried next cycle; the followed commit still applies.
    moved = remote.bare.with_name("moved.git")
    remote.bare.rename(moved)
    failed = follow(run_cli, git_env, remote)
    assert failed.returncode == 1, failed.stderr
    assert "error[git-fetch-failed]" in failed.stderr
    assert f"(at {second[:12]})" in failed.stderr
    assert snapshot(database_url) == before
    moved.rename(remote.bare)

    # The hint's way back: make the branch descend from the followed commit again, then go on.
    remote.git("merge", "-q", "-s", "ours", "-m", "descend from the applied commit", second)
    third = remote.push(["shop", "api", "blog"], "add blog")
    forward = follow(run_cli, git_env, remote)
    assert forward.returncode == 0, forward.stderr
    assert followed(database_url)[1] == third
    assert current(database_url) == ["api", "blog", "shop"]
    assert actors(database_url, "blog") == {f"git:{third} {EMAIL}"}

    settled = snapshot(database_url)
    # A head whose declarations are invalid: its line and column are logged, the followed commit stays.
    (remote.work / "certs" / "broken.yaml").write_text("certificates: [{name: 1\n")
    remote.git("add", "-A")
    remote.git("commit", "-q", "-m", "broken")
    remote.git("push", "-q", "origin", "HEAD:main")
    invalid = follow(run_cli, git_env, remote)
    assert invalid.returncode == 1, invalid.stderr
    assert re.search(r"ERROR \w{12}: broken\.yaml:\d+:\d+: error\[yaml-syntax\]", invalid.stderr), invalid.stderr
    assert "error[desired-state-invalid]" in invalid.stderr
    assert f"(staying at {third[:12]})" in invalid.stderr
    assert snapshot(database_url) == settled


@pytest.fixture
def signing(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(allowed key, other key, allowed signers file): ed25519 SSH keys made by ssh-keygen."""
    require_binary("ssh-keygen")
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("allowed", "other"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)], check=True, timeout=60
        )
    signers = keys / "allowed_signers"
    signers.write_text(f"{EMAIL} {(keys / 'allowed.pub').read_text()}")
    return keys / "allowed", keys / "other", signers


def test_require_signed_commits_refuses_unsigned_and_unknown_signers(
    run_cli: Runner, git_env: dict[str, str], remote: Remote, database_url: str, signing: tuple[Path, Path, Path]
) -> None:
    allowed, other, signers = signing
    required = ("--require-signed-commits", "--allowed-signers", str(signers))
    empty = snapshot(database_url)

    unsigned = remote.push(["shop"], "shop, unsigned")
    refused = follow(run_cli, git_env, remote, *required)
    assert refused.returncode == 1, refused.stderr
    assert f"error[git-commit-unsigned]: commit {unsigned[:12]} on main is not signed: not applied" in refused.stderr
    assert snapshot(database_url) == empty  # nothing planned, nothing applied, nothing recorded

    stranger = remote.push(["shop"], "signed by a key not allowed", key=other)
    refused = follow(run_cli, git_env, remote, *required)
    assert refused.returncode == 1, refused.stderr
    assert f"error[git-commit-signature-refused]: commit {stranger[:12]} on main is signed by key SHA256:" in (
        refused.stderr
    )
    assert snapshot(database_url) == empty

    # A signed commit on top: its tree (with the refused commits' content) applies, as itself.
    signed = remote.push(["shop", "api"], "add api, signed", key=allowed)
    applied = follow(run_cli, git_env, remote, *required)
    assert applied.returncode == 0, applied.stderr
    assert current(database_url) == ["api", "shop"]
    assert actors(database_url, "shop") == actors(database_url, "api") == {f"git:{signed} {EMAIL}"}

    # An unsigned commit after it is refused; the signed one stays followed and nothing changes.
    after = snapshot(database_url)
    later = remote.push(["shop", "api", "blog"], "add blog, unsigned")
    refused = follow(run_cli, git_env, remote, *required)
    assert refused.returncode == 1, refused.stderr
    assert f"not following {later[:12]} (staying at {signed[:12]})" in refused.stderr
    assert "error[git-commit-unsigned]" in refused.stderr
    assert snapshot(database_url) == after
    assert current(database_url) == ["api", "shop"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--branch", "main"], "usage"),  # without --git
        (["--git", "file:///nowhere", "--require-signed-commits"], "usage"),  # without --allowed-signers
        (
            ["--git", "file:///nowhere", "--require-signed-commits", "--allowed-signers", "missing"],
            "allowed-signers-unreadable",
        ),
        (["--git", "file:///nowhere", "--dir", "../elsewhere"], "usage"),  # not inside the repository
        (["--git", "file:///nowhere", "--ref", "origin/main"], "usage"),
    ],
)
def test_run_git_options_are_checked_before_anything_runs(
    run_cli: Runner, git_env: dict[str, str], tmp_path: Path, args: list[str], code: str
) -> None:
    result = run_cli("run", "--once", *args, env=git_env)
    assert result.returncode == 1, result.stderr
    assert f"error[{code}]" in result.stderr
    assert not (tmp_path / "state" / "git").exists()


def test_a_non_empty_directory_is_not_taken_for_the_clone(
    run_cli: Runner, git_env: dict[str, str], remote: Remote, tmp_path: Path
) -> None:
    remote.push(["shop"], "shop")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine\n")
    result = follow(run_cli, git_env, remote, "--git-dir", str(taken))
    assert result.returncode == 1, result.stderr
    assert "error[git-dir-not-a-clone]" in result.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    shutil.rmtree(taken)


def test_one_loop_applies_a_commit_pushed_between_two_cycles(
    remote: Remote, database_url: str, tmp_path: Path, git_env: dict[str, str]
) -> None:
    """In one process: the Reconciler keeps its source and adapters; the next cycle sees the new head."""
    from datetime import UTC, datetime

    from certreconcile.actual.repository import PostgresStore
    from certreconcile.clock import FixedClock
    from certreconcile.desired.model import DesiredState
    from certreconcile.gitfollow import GitFollowOptions, GitFollowSource
    from certreconcile.reconciler import Reconciler
    from certreconcile.wiring import Settings, build_environment

    options = GitFollowOptions(remote.url, "main", PurePosixPath("certs"), tmp_path / "clone")
    settings = Settings(options.desired_dir, tmp_path / "state", database_url, git_env)
    store = PostgresStore(database_url)
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))

    def environment(desired: DesiredState) -> Any:
        return build_environment(desired, settings, store, clock)

    source = GitFollowSource(options, store, git_env)
    reconciler = Reconciler(source, store, environment, clock, apply_changes=True, settings=settings)
    first = remote.push(["shop"], "shop")
    one = reconciler.cycle()
    assert (one.outcome, one.git_commit, one.errors) == ("success", first, ())
    second = remote.push(["shop", "api"], "add api")
    two = reconciler.cycle()
    assert (two.outcome, two.git_commit, two.errors) == ("success", second, ())
    assert [result.change.name for result in two.results] == ["api"]
    assert actors(database_url, "api") == {f"git:{second} {EMAIL}"}
    three = reconciler.cycle()
    assert (three.outcome, three.git_commit) == ("noop", second)


def test_an_unreachable_remote_with_nothing_followed_yet_applies_nothing(
    run_cli: Runner, git_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    empty = snapshot(database_url)
    result = run_cli("run", "--git", (tmp_path / "nowhere.git").as_uri(), "--once", env=git_env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("error[git-fetch-failed]") == 1, result.stderr  # reported once, as the cycle's error
    assert "cycle failed: error[git-fetch-failed]: git fetch of main from file://" in result.stderr
    assert snapshot(database_url) == empty

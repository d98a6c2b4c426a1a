"""Follow a git branch: the desired-state source of ``certreconcile run --git URL --branch B`` (design §9).

Pull-based, as Flux and Argo CD do: the applier inside the network fetches the branch, nothing
pushes to it. Each cycle fetches the branch into a clone kept in the state directory, then
picks the commit whose declarations apply:

* the branch head, when it is a fast-forward of the followed commit (or there is none yet),
  carries an SSH signature of an allowed signer (only with ``allowed_signers``: git's own
  ``verify-commit``) and holds valid declarations. It becomes the followed commit, recorded in
  the database (``StateMeta.git_commit``) by compare-and-set, so replicas agree and none goes back;
* else the followed commit stays: its declarations still apply (renewals go on) and the reason
  is reported as a problem of the cycle: a failed fetch (``git-fetch-failed``, retried next
  cycle), a rewound or diverged branch (``git-not-fast-forward``), an unsigned commit
  (``git-commit-unsigned``), a signer not allowed (``git-commit-signature-refused``), invalid
  declarations. With no followed commit yet, the reason is the cycle's error: nothing applies.

Only the head is checked and applied: commits between the followed one and the head are never
applied on their own. A refused commit's changes therefore apply with the next accepted head that
contains them (the tree at that head is what applies).

The remote URL is passed to git on the command line at each fetch and never written to the clone's
configuration; the database records it without credentials.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from certreconcile.actual.store import FollowedCommit, StateStore
from certreconcile.desired.model import DesiredState
from certreconcile.errors import CertReconcileError, ConfigError, DesiredStateError

__all__ = ["GitFollowOptions", "GitFollowSource", "public_url"]

log = logging.getLogger("certreconcile.run")

#: How long one git command may take (a fetch over a slow link included).
GIT_TIMEOUT_SECONDS = 300

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
_SSH_SIGNATURE = "-----BEGIN SSH SIGNATURE-----"
_REWOUND_HINT = (
    "the followed commit is not an ancestor of the branch head (force-push or rewritten history): "
    "make the branch descend from it again, e.g. `git merge -s ours <followed sha>` and push"
)


def public_url(url: str) -> str:
    """``url`` without its user information (``https://user:token@host/x`` → ``https://host/x``)."""
    return _USERINFO.sub(r"\1", url)


@dataclass(frozen=True, slots=True)
class GitFollowOptions:
    url: str
    branch: str
    path: PurePosixPath  # the desired-state directory inside the repository ("." for its root)
    clone_dir: Path
    allowed_signers: Path | None = None  # set: a commit needs an SSH signature of a signer listed there

    @property
    def source(self) -> str:
        """What is followed, as the database records it: never a credential."""
        return f"{public_url(self.url)}#{self.branch}:{self.path.as_posix()}"

    @property
    def desired_dir(self) -> Path:
        return self.clone_dir / self.path


class _Git:
    """git commands in the clone; never prompts (``GIT_TERMINAL_PROMPT=0``)."""

    def __init__(self, clone_dir: Path, env: Mapping[str, str]) -> None:
        self.clone_dir = clone_dir
        self.env = {name: value for name, value in env.items() if name not in _REPOSITORY_VARIABLES}
        self.env["GIT_TERMINAL_PROMPT"] = "0"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.clone_dir), *args],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=GIT_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CertReconcileError(
                f"git {args[0]} could not run: {type(exc).__name__}",
                code="git-command-failed",
                hint="install git and check the clone directory (--git-dir)",
            ) from None
        if check and done.returncode != 0:
            raise CertReconcileError(
                f"git {args[0]} failed (exit {done.returncode}): {_last_line(done.stderr)}",
                code="git-command-failed",
                hint=f"check the clone in {self.clone_dir} (--git-dir); remove it to clone again",
            )
        return done

    def commit_of(self, ref: str) -> str | None:
        found = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return found.stdout.strip() if found.returncode == 0 else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0


def _last_line(text: str) -> str:
    """git's first ``fatal:``/``error:`` line on stderr (else its last line), credentials in URLs removed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chosen = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@", r"\1", chosen)[:300] or "no message"


#: Variables that would point git at another repository than the clone.
_REPOSITORY_VARIABLES = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
     "GIT_NAMESPACE", "GIT_COMMON_DIR"}
)  # fmt: skip


class GitFollowSource:
    """The declarations at the followed commit of a branch (see the module's documentation)."""

    def __init__(self, options: GitFollowOptions, store: StateStore, env: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.store = store
        self._git = _Git(options.clone_dir, os.environ if env is None else env)
        self._problems: tuple[str, ...] = ()

    def problems(self) -> tuple[str, ...]:
        """The problems of the last load that did not stop it (the followed commit applied instead)."""
        return self._problems

    def load(self) -> DesiredState:
        problems: list[CertReconcileError] = []
        try:
            self._fetch()
        except CertReconcileError as exc:
            problems.append(exc)
        try:
            return self._follow(problems)
        finally:  # a problem raised left the list: the cycle reports (and logs) it as its error
            self._problems = tuple(problem.one_line() for problem in problems)
            if problems and problems[0].code == "git-fetch-failed":
                log.error("%s", problems[0].one_line())  # one line: no traceback

    def _fetch(self) -> None:
        """Clone on first use (``git init`` + fetch), then fetch the branch; the URL is never stored."""
        clone = self.options.clone_dir
        if not (clone / ".git").is_dir():
            if clone.is_dir() and any(clone.iterdir()):
                raise CertReconcileError(
                    f"{clone} is not empty and not a git clone",
                    code="git-dir-not-a-clone",
                    hint="pass an empty or new directory with --git-dir",
                )
            clone.mkdir(parents=True, exist_ok=True)
            self._git.run("init", "--quiet")
        branch = self.options.branch
        fetched = self._git.run(
            "fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--", self.options.url,
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}", check=False,
        )  # fmt: skip
        if fetched.returncode != 0:
            raise CertReconcileError(
                f"git fetch of {branch} from {public_url(self.options.url)} failed "
                f"(exit {fetched.returncode}): {_last_line(fetched.stderr)}",
                code="git-fetch-failed",
                hint="check the remote and its credentials; the next cycle tries again",
            )

    def _follow(self, problems: list[CertReconcileError]) -> DesiredState:
        for _attempt in range(3):  # a compare-and-set lost to another replica: decide again
            recorded = self._recorded()
            base = recorded.commit if recorded is not None and recorded.source == self.options.source else None
            if base is not None and self._git.commit_of(base) is None:
                raise (problems.pop(0) if problems else _followed_missing(base, self.options.clone_dir))
            head = self._git.commit_of(f"refs/remotes/origin/{self.options.branch}")
            if head is None or head == base:
                if base is None:
                    raise (problems.pop(0) if problems else _never_fetched(self.options))
                return self._load_at(base)
            try:
                self._check(base, head)
                desired = self._load_at(head)
            except CertReconcileError as refused:
                _log_refusal(head, refused, fallback=base)
                if base is None:
                    raise
                problems.append(refused)
                return self._load_at(base)
            with self.store.session() as session:
                moved = session.follow_commit(recorded, FollowedCommit(self.options.source, head))
            if moved:
                log.info("following %s at %s (%s)", self.options.branch, head, desired.git_author_email or "")
                return desired
        raise CertReconcileError(
            "the followed commit kept moving under this replica",
            code="git-command-failed",
            hint="the next cycle tries again",
        )

    def _recorded(self) -> FollowedCommit | None:
        """What the database follows; another source's commit is no base: this one starts at its head."""
        with self.store.session() as session:
            recorded = session.followed_commit()
        if recorded is not None and recorded.source != self.options.source:
            log.info("the database followed %s at %s; now following %s", recorded.source, recorded.commit,
                     self.options.source)  # fmt: skip
        return recorded

    def _check(self, base: str | None, head: str) -> None:
        """Refuse ``head`` unless it fast-forwards ``base`` and, when required, is signed by an allowed signer."""
        if base is not None and not self._git.is_ancestor(base, head):
            raise CertReconcileError(
                f"branch {self.options.branch} moved from the followed commit {base[:12]} to {head[:12]}, "
                "which does not descend from it: not applied",
                code="git-not-fast-forward",
                hint=_REWOUND_HINT,
            )
        if self.options.allowed_signers is not None:
            self._verify_signature(head, self.options.allowed_signers)

    def _verify_signature(self, sha: str, allowed_signers: Path) -> None:
        header = self._git.run("cat-file", "commit", sha).stdout.split("\n\n", 1)[0]
        signature = re.search(r"^gpgsig(?:-sha256)? (.*)$", header, re.MULTILINE)
        sign_hint = "sign with an SSH key listed in the allowed signers file; the next signed commit on top applies"
        if signature is None:
            raise CertReconcileError(
                f"commit {sha[:12]} on {self.options.branch} is not signed: not applied",
                code="git-commit-unsigned",
                hint=sign_hint,
            )
        checked = self._git.run(
            "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}",
            "log", "-1", "--format=%G?%n%GK", sha,
        )  # fmt: skip
        verified = self._git.run(
            "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "verify-commit", sha,
            check=False,
        )  # fmt: skip
        status, _, key = checked.stdout.strip().partition("\n")
        if signature.group(1).strip() == _SSH_SIGNATURE and verified.returncode == 0 and status == "G":
            return
        if signature.group(1).strip() != _SSH_SIGNATURE:
            why = "is not signed with an SSH key (only SSH signatures are checked against the allowed signers)"
        elif status == "U":
            why = f"is signed by key {key.strip()}, which is not in {allowed_signers}"
        else:
            why = f"has a signature git does not accept ({_last_line(verified.stderr)})"
        raise CertReconcileError(
            f"commit {sha[:12]} on {self.options.branch} {why}: not applied",
            code="git-commit-signature-refused",
            hint=sign_hint,
        )

    def _load_at(self, sha: str) -> DesiredState:
        """Check ``sha`` out in the clone (relative paths of the declarations resolve there) and load it."""
        from certreconcile.desired import load_desired

        if self._git.commit_of("HEAD") != sha:
            self._git.run("-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", sha)
        directory = self.options.desired_dir
        if not directory.is_dir():
            raise ConfigError(
                f"{self.options.path.as_posix()!r} does not exist at commit {sha[:12]}",
                code="desired-dir-not-found",
                hint="with --git, --dir is a path inside the repository (default: its root)",
            )
        return load_desired(directory, ref=sha)


def _log_refusal(head: str, refused: CertReconcileError, *, fallback: str | None) -> None:
    """Each invalid declaration at ``head``, then its refusal (the cycle logs that when nothing applies)."""
    if isinstance(refused, DesiredStateError):
        for diagnostic in refused.diagnostics:
            log.error("%s: %s", head[:12], diagnostic)
    if fallback is not None:
        log.error("not following %s (staying at %s): %s", head[:12], fallback[:12], refused.one_line())


def _followed_missing(commit: str, clone_dir: Path) -> CertReconcileError:
    return CertReconcileError(
        f"the followed commit {commit[:12]} (recorded in the database) is not in the clone {clone_dir}",
        code="git-followed-commit-missing",
        hint=_REWOUND_HINT + "; or check --git and --branch: another replica may follow another repository",
    )


def _never_fetched(options: GitFollowOptions) -> CertReconcileError:
    return CertReconcileError(
        f"branch {options.branch} has not been fetched from {public_url(options.url)} yet",
        code="git-fetch-failed",
        hint="check the remote and its credentials; the next cycle tries again",
    )

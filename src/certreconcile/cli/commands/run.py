"""``certreconcile run``: the continuous reconciler (see :mod:`certreconcile.reconciler`) and its metrics.

Registered on the typer app by ``cli/main.py``; everything heavy is imported inside the
command, so ``certreconcile --help`` stays fast. Under ``CERTRECONCILE_TEST_NOW`` (tests only)
the loop runs on a fixed clock that its sleeps advance instead of waiting.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.common import fail, load_directory
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.logging_setup import LogFormat, LogFormatOption, LogLevel, LogLevelOption, configure_logging
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from certreconcile.actual.schedule import VerificationSchedule
    from certreconcile.actual.store import StateStore
    from certreconcile.apply.executor import ApplyEnvironment
    from certreconcile.apply.health import Readiness
    from certreconcile.apply.metrics import ReconcilerMetrics
    from certreconcile.desired import DesiredCache
    from certreconcile.desired.model import DesiredState
    from certreconcile.gitfollow import GitFollowOptions
    from certreconcile.reconciler import CycleResult, DesiredSource, LoopControl
    from certreconcile.wiring import Settings

__all__ = ["GitDesiredSource", "parse_interval", "parse_jitter", "parse_verify_every", "run_command"]


def parse_interval(text: str) -> float:
    """Seconds: a duration (``1h``, ``90s``, ``5m``) or a plain number of seconds (``0.5``)."""
    from certreconcile.domain.durations import parse_duration

    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise CertReconcileError(str(exc), code="usage", hint="write e.g. --interval 1h, 15m or 30s") from None
    if not seconds > 0:
        raise CertReconcileError(f"--interval {text!r} must be longer than zero", code="usage")
    return seconds


def parse_verify_every(text: str) -> float:
    """``--verify-every``: a duration as ``--interval`` takes, or 0 (every target, every cycle)."""
    try:
        return 0.0 if text.strip() in ("0", "0.0", "0s") else parse_interval(text)
    except CertReconcileError as exc:
        raise CertReconcileError(
            f"--verify-every: {exc.message.removeprefix('--interval ')}", code="usage",
            hint="write e.g. --verify-every 1h, 30m, or 0 to probe every target each cycle",
        ) from None  # fmt: skip


def parse_jitter(text: str) -> float:
    """A fraction of the interval: ``10%`` or ``0.1``; from 0 (none) to below 100%."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise CertReconcileError(
            f"--jitter {text!r} is not a fraction", code="usage", hint="write e.g. 10% or 0.1"
        ) from None
    if not 0 <= value < 1:
        raise CertReconcileError(f"--jitter {text!r} must be at least 0 and below 100%", code="usage")
    return value


class GitDesiredSource:
    """The declarations of ``directory``: the work tree, or a git ref; fetched first when asked.

    With ``ref``, ``pull`` fetches the ref's remote (``origin/main`` → ``origin``; else every
    remote), and the work tree is never touched. Without ``ref``, ``pull`` fast-forwards the
    work tree (``git pull --ff-only``) and the files are read from it.
    """

    def __init__(self, directory: Path, ref: str | None = None, *, pull: bool = False) -> None:
        self.directory = directory
        self.ref = ref
        self.pull = pull
        self._cache: DesiredCache | None = None  # validates again only when a file changed

    def load(self) -> DesiredState:
        from certreconcile.desired import DesiredCache

        if self.pull:
            self._fetch()
        self._cache = self._cache or DesiredCache()
        return load_directory(self.directory, self.ref, self._cache)

    def _fetch(self) -> None:
        import git

        try:
            repo = git.Repo(self.directory, search_parent_directories=True)
            if self.ref is None:
                repo.git.pull("--ff-only", "--quiet")
                return
            names = {remote.name: remote for remote in repo.remotes}
            first = self.ref.split("/", 1)[0]
            for remote in [names[first]] if "/" in self.ref and first in names else list(names.values()):
                remote.fetch()
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise CertReconcileError(
                f"{self.directory} is not inside a git repository",
                code="not-a-git-repository",
                hint="run without --git-pull",
            ) from exc
        except git.GitCommandError as exc:
            raise CertReconcileError(
                f"git {'pull' if self.ref is None else 'fetch'} failed (exit {exc.status})",
                code="git-fetch-failed",
                hint="check the remote and its credentials; the next cycle tries again",
            ) from exc


def _install_signal_handlers(control: LoopControl) -> None:
    """SIGTERM/SIGINT: finish the cycle in flight, then exit 0 (a second one aborts). SIGHUP: run now."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if control.stopping:
            raise KeyboardInterrupt  # asked twice: stop now (the journal lets the next run resume)
        logging.getLogger("certreconcile.run").info(
            "received %s: stopping after the cycle in flight", signal.Signals(signum).name
        )
        control.request_stop()

    def reload(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("certreconcile.run").info("received SIGHUP: reconciling now")
        control.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, reload)


def _summary(result: CycleResult) -> str:
    done = sum(1 for r in result.results if r.outcome == "done")
    skipped = sum(1 for r in result.results if r.outcome == "skipped")
    text = (
        f"cycle {result.outcome}: {done} done, {skipped} skipped, {len(result.failures)} failed, "
        f"{len(result.deferred)} declaration change(s) not applied"
    )
    if result.git_commit:
        text += f" (at {result.git_commit[:12]})"
    return text


# The options of `run`, one alias each (the command's signature stays short).
_DirectoryOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="CERTRECONCILE_DIR",
        help="The desired-state directory (also locates the embedded database).",
        file_okay=False,
        show_default="current directory",
    ),
]
_RefOption = Annotated[
    str | None,
    typer.Option(help="Read the declarations at this git ref (e.g. origin/main) instead of the work tree."),
]
_GitPullOption = Annotated[
    bool,
    typer.Option(
        "--git-pull",
        help="Before each cycle: fetch the ref's remote (with --ref), or fast-forward the work tree.",
    ),
]
_GitUrlOption = Annotated[
    str | None,
    typer.Option(
        "--git",
        metavar="URL",
        help="Follow --branch of this repository: each cycle fetches it and applies a new head commit "
        "(fast-forwards only) as git:<sha> <email>. Implies --apply-changes; --dir is then a path inside "
        "the repository.",
    ),
]
_BranchOption = Annotated[str | None, typer.Option(help="The branch --git follows.", show_default="main")]
_GitDirOption = Annotated[
    Path | None,
    typer.Option("--git-dir", help="Where --git keeps its clone.", file_okay=False, show_default="<data dir>/git"),
]
_RequireSignedCommitsOption = Annotated[
    bool,
    typer.Option(
        "--require-signed-commits",
        help="With --git: apply only commits signed by an SSH key of --allowed-signers (git verify-commit).",
    ),
]
_AllowedSignersOption = Annotated[
    Path | None,
    typer.Option(
        "--allowed-signers",
        help="The allowed signers file (ssh-keygen format) of --require-signed-commits.",
        dir_okay=False,
    ),
]
_IntervalOption = Annotated[str, typer.Option(help="Time between cycles: 1h, 15m, 30s, or seconds (0.5).")]
_JitterOption = Annotated[str, typer.Option(help="Randomise each interval by up to this share either way.")]
_ApplyChangesOption = Annotated[
    bool,
    typer.Option(
        "--apply-changes",
        help="Also apply declaration changes (new, changed, removed names and targets), as git:<sha>. "
        "Without it, run applies only renewals and drift fixes, and reports the rest. Revocations and "
        "retirements beyond the destroy threshold are never applied by run: they wait for "
        "`apply --allow-destroy N`.",
    ),
]
_RefreshOption = Annotated[bool, typer.Option(help="Probe every target each cycle and redistribute where it drifted.")]
_VerifyEveryOption = Annotated[
    str,
    typer.Option(
        help="How often a target that served the right certificate is probed again (+ up to 10%, random); "
        "sooner when the stored certificate or the target's declaration changed, after run deployed it, or "
        "when the files a files/nginx target reads back changed (inode, size, mtime). 0: every target, every cycle.",
    ),
]
_ConcurrencyOption = Annotated[int, typer.Option(min=1, max=64, help="Changes applied in parallel.")]
_MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=65535,
        help="Serve Prometheus metrics (/metrics) and the probes /healthz and /readyz on this port (0: any free port).",
    ),
]
_MetricsAddressOption = Annotated[str, typer.Option(help="The address the metrics listen on.")]
_OnceOption = Annotated[bool, typer.Option("--once", help="Run one cycle and exit: 0 if it went well, 1 if not.")]


def run_command(
    directory: _DirectoryOption = Path(),
    ref: _RefOption = None,
    git_pull: _GitPullOption = False,
    git_url: _GitUrlOption = None,
    branch: _BranchOption = None,
    git_dir: _GitDirOption = None,
    require_signed_commits: _RequireSignedCommitsOption = False,
    allowed_signers: _AllowedSignersOption = None,
    interval: _IntervalOption = "1h",
    jitter: _JitterOption = "10%",
    apply_changes: _ApplyChangesOption = False,
    refresh: _RefreshOption = True,
    verify_every: _VerifyEveryOption = "1h",
    concurrency: _ConcurrencyOption = 4,
    metrics_port: _MetricsPortOption = None,
    metrics_address: _MetricsAddressOption = "127.0.0.1",
    once: _OnceOption = False,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Reconcile continuously: every interval (and on SIGHUP), plan and apply renewals and drift fixes.

    Renewals are audited as automation:renewal; declaration changes wait for `apply` (or
    --apply-changes; but revocations and retirements beyond the destroy threshold, see
    `apply --help`, always wait for `apply --allow-destroy N`). Run several replicas against
    one database for availability: they share the work through per-name database locks and
    never issue the same renewal twice.
    With --git URL, run follows --branch from a clone of its own and applies each new head
    commit (fast-forwards only; with --require-signed-commits, only commits signed by an allowed
    SSH key) as git:<sha> <email>.
    SIGTERM or SIGINT finishes the cycle in flight, then exits 0; SIGHUP runs a cycle now.
    With --metrics-port, /healthz answers 200 while the process runs and /readyz 200 only while the
    database answers and the last cycle finished within the interval (+ jitter + 5 minutes).

    Examples: certreconcile run --dir certs/ --metrics-port 9402;
    certreconcile run --ref origin/main --git-pull --interval 15m --apply-changes;
    certreconcile run --git git@git.internal:ops/certs.git --branch main --dir certs --interval 5m;
    certreconcile run --once; certreconcile run --log-format json --log-level debug
    """
    configure_logging(log_level, log_format)
    try:
        git = _git_options(git_url, branch, directory, git_dir, require_signed_commits, allowed_signers,
                           other_source=ref is not None or git_pull)  # fmt: skip
        _run(directory, git=git, ref=ref, git_pull=git_pull, interval=parse_interval(interval),
             jitter=parse_jitter(jitter), apply_changes=apply_changes or git is not None, refresh=refresh,
             verify_every=parse_verify_every(verify_every), concurrency=concurrency, metrics_port=metrics_port,
             metrics_address=metrics_address, once=once)  # fmt: skip
    except CertReconcileError as exc:
        fail(exc)


def _allowed_signers(required: bool, path: Path | None) -> Path | None:
    """The allowed signers file, absolute (git runs in the clone); None when signatures are not required."""
    if required != (path is not None):
        raise CertReconcileError(
            "--require-signed-commits and --allowed-signers go together", code="usage",
            hint="pass --require-signed-commits --allowed-signers FILE (lines: <principal> <ssh public key>)",
        )  # fmt: skip
    if path is None:
        return None
    try:
        path.read_bytes()
    except OSError as exc:
        raise CertReconcileError(
            f"cannot read the allowed signers file {path}: {exc.strerror}",
            code="allowed-signers-unreadable",
            hint="pass a readable file: one `<principal> <ssh public key>` line per allowed signer",
        ) from None
    return path.resolve()


def _data_dir() -> Path:
    """The state directory of ``run --git``: CERTRECONCILE_DATA_DIR, else ``.certreconcile`` here."""
    return Path(os.environ.get("CERTRECONCILE_DATA_DIR") or ".certreconcile").absolute()


def _git_options(
    url: str | None,
    branch: str | None,
    directory: Path,
    git_dir: Path | None,
    require_signed_commits: bool,
    allowed_signers: Path | None,
    *,
    other_source: bool,
) -> GitFollowOptions | None:
    """The options of ``--git`` (None without it), checked: exit 1 before anything runs."""
    from pathlib import PurePosixPath

    from certreconcile.gitfollow import GitFollowOptions

    if url is None:
        if branch is not None or git_dir is not None or require_signed_commits or allowed_signers is not None:
            raise CertReconcileError(
                "--branch, --git-dir, --require-signed-commits and --allowed-signers go with --git", code="usage"
            )
        return None
    if other_source:
        raise CertReconcileError("--git does not go with --ref or --git-pull", code="usage",
                                 hint="--git keeps its own clone and follows --branch")  # fmt: skip
    signers = _allowed_signers(require_signed_commits, allowed_signers)
    branch = branch or "main"
    if not branch or branch.startswith(("-", "/")) or any(c.isspace() or c in "~^:?*[\\" for c in branch):
        raise CertReconcileError(f"--branch {branch!r} is not a branch name", code="usage", hint="e.g. --branch main")
    inside = PurePosixPath(directory.as_posix())
    if inside.is_absolute() or ".." in inside.parts:
        raise CertReconcileError(
            f"--dir {directory} must be a path inside the repository with --git", code="usage",
            hint="pass the directory of the declarations relative to the repository's root (default: the root)",
        )  # fmt: skip
    clone = (git_dir or _data_dir() / "git").absolute()
    return GitFollowOptions(url=url, branch=branch, path=inside, clone_dir=clone, allowed_signers=signers)


def _settings(directory: Path, git: GitFollowOptions | None) -> Settings:
    """The settings of ``directory``; with ``--git``, of the clone's directory, with the data directory here."""
    from certreconcile.wiring import Settings

    if git is None:
        if not directory.is_dir():
            raise CertReconcileError(
                f"{directory} is not a directory", code="dir-missing",
                hint="pass the desired-state directory with --dir",
            )  # fmt: skip
        return Settings.from_env(directory)
    data_dir = _data_dir()
    env = {**os.environ, "CERTRECONCILE_DATA_DIR": str(data_dir)}  # the embedded database lives there too
    return Settings(git.desired_dir, data_dir, env.get("CERTRECONCILE_DATABASE_URL") or None, env)


def _source(directory: Path, store: StateStore, settings: Settings, git: GitFollowOptions | None, ref: str | None,
            *, git_pull: bool) -> DesiredSource:  # fmt: skip
    if git is None:
        return GitDesiredSource(directory, ref, pull=git_pull)
    from certreconcile.gitfollow import GitFollowSource

    return GitFollowSource(git, store, settings.env)


def _run(
    directory: Path,
    *,
    git: GitFollowOptions | None,
    ref: str | None,
    git_pull: bool,
    interval: float,
    jitter: float,
    apply_changes: bool,
    refresh: bool,
    verify_every: float,
    concurrency: int,
    metrics_port: int | None,
    metrics_address: str,
    once: bool,
) -> None:
    from certreconcile.apply.health import Readiness, database_probe
    from certreconcile.apply.metrics import ReconcilerMetrics
    from certreconcile.cli.common import cli_clock
    from certreconcile.reconciler import LoopControl, Reconciler, run_forever, sleeper_for
    from certreconcile.wiring import build_environment, open_store

    settings = _settings(directory, git)
    log = logging.getLogger("certreconcile.run")
    store = open_store(settings, keep_idle=concurrency + 2)  # the change threads' sessions and the cycle's own
    clock = cli_clock()
    metrics = ReconcilerMetrics()
    readiness = Readiness.for_interval(clock, database_probe(store), interval=interval, jitter=jitter)
    server = _serve_metrics(metrics, readiness, metrics_address, metrics_port) if metrics_port is not None else None
    control = LoopControl()
    _install_signal_handlers(control)

    def environment(desired: DesiredState) -> ApplyEnvironment:
        return build_environment(desired, settings, store, clock)

    reconciler = Reconciler(_source(directory, store, settings, git, ref, git_pull=git_pull), store, environment, clock,
                            apply_changes=apply_changes, concurrency=concurrency, refresh=refresh, metrics=metrics,
                            destroy_threshold=settings.destroy_threshold, settings=settings,
                            schedule=_schedule(settings, verify_every))  # fmt: skip
    last: list[CycleResult] = []

    def report(result: CycleResult) -> None:
        last[:] = [result]
        readiness.cycle_finished(result.finished_at, result.outcome)
        log.info("%s", _summary(result), extra={"step": "cycle", "outcome": result.outcome})

    log.info("reconciling %s", _what(directory, git, ref, interval, jitter, apply_changes=apply_changes))
    try:
        run_forever(reconciler.cycle, interval=interval, jitter=jitter, control=control, once=once,
                    on_cycle=report, sleep=sleeper_for(clock))  # fmt: skip
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            _set_acme_observer(None)
    log.info("stopped")
    if once and last and last[0].outcome in ("error", "partial"):
        raise typer.Exit(ExitCode.ERROR)


def _schedule(settings: Settings, verify_every: float) -> VerificationSchedule | None:
    """The targets' verification schedule, kept in the data directory between runs; None: probe all, always."""
    from datetime import timedelta

    from certreconcile.actual.schedule import VerificationSchedule

    every = timedelta(seconds=verify_every)
    return VerificationSchedule(every, path=settings.data_dir / "verification-schedule.json") if every else None


def _what(directory: Path, git: GitFollowOptions | None, ref: str | None, interval: float, jitter: float, *,
          apply_changes: bool) -> str:  # fmt: skip
    """What the loop reconciles, how often: the first line of its log."""
    source = directory if git is None else f"{git.path} of {git.source.split('#')[0]}"
    following = f" at {ref}" if ref else f" following {git.branch}" if git else ""
    changes = ", applying declaration changes" if apply_changes else ""
    return f"{source}{following} every {interval:g}s (jitter {jitter * 100:g}%){changes}"


def _set_acme_observer(metrics: ReconcilerMetrics | None) -> None:
    from certreconcile.plugins.issuers.acme.client import set_request_observer

    set_request_observer(metrics.observe_acme_request if metrics is not None else None)


def _serve_metrics(metrics: ReconcilerMetrics, readiness: Readiness, address: str, port: int) -> WSGIServer:
    from certreconcile.apply.health import endpoints_app, serve_endpoints

    try:
        server, _ = serve_endpoints(endpoints_app(metrics.registry, readiness), address, port)
    except OSError as exc:
        raise CertReconcileError(
            f"cannot serve metrics on {address}:{port}: {exc.strerror}",
            code="metrics-port-unavailable",
            hint="choose another --metrics-port or --metrics-address",
        ) from exc
    _set_acme_observer(metrics)
    host = f"[{address}]" if ":" in address else address
    logging.getLogger("certreconcile.run").info(
        "serving metrics on http://%s:%d/metrics (probes: /healthz, /readyz)", host, server.server_port
    )
    return server

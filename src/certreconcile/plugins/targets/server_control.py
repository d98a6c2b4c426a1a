"""Pieces shared by the targets that drive a running server (nginx, HAProxy).

* :func:`run_command`: a test or reload command, without a shell; a failure is one line.
* :func:`signal_pid_file`: a signal to the process whose PID a pid file holds.
* :class:`GroupCommit`: deployments to one server batched under one test and one reload.
* :func:`locked_directory`: one deployment at a time per output directory (``flock`` on the
  directory itself, so no lock file sits where a server loading a whole directory would see it).

The files are written, and put back when a new set is rejected (``PemFolderSnapshot``), by
safe_files.py, which follows no symbolic link below the target's directory.

Errors are :class:`TargetError`, one line, never with key material: only the server's own
diagnostic lines are quoted, and a line that looks like PEM is never quoted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

from certreconcile.errors import TargetError
from certreconcile.plugins.targets.safe_files import FileSet, PemFolderSnapshot, write_file_set

__all__ = [
    "GroupCommit",
    "ServerActions",
    "first_diagnostic",
    "locked_directory",
    "locked_instance",
    "run_command",
    "signal_pid_file",
]

_SEVERE = ("[emerg]", "[alert]", "[crit]", "[error]", "[ALERT]", "[ERROR]", "error", "Error")


def first_diagnostic(output: bytes) -> str:
    """The first line of ``output`` that reports an error (else the first line), at most 300 characters."""
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and "-----BEGIN" not in line and "PRIVATE KEY" not in line]
    if not lines:
        return ""
    severe = [line for line in lines if any(marker in line for marker in _SEVERE)]
    return (severe or lines)[0][:300]


def run_command(
    target: str, command: str, *, cwd: Path, what: str, code: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (split like a POSIX shell, run without one); raise when it cannot run or exits non-zero."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise TargetError(f"target {target}: the {what} {command!r} cannot be parsed: {exc}", code=code) from exc
    if not argv:
        raise TargetError(f"target {target}: the {what} is empty", code=code)
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"target {target}: the {what} failed to run: {exc}", code=code) from exc
    if result.returncode != 0:
        detail = first_diagnostic(result.stderr + b"\n" + result.stdout)
        raise TargetError(
            f"target {target}: the {what} `{command}` exited {result.returncode}" + (f": {detail}" if detail else ""),
            code=code,
            hint=f"run `{command}` by hand to see its full output",
        )
    return result


def signal_pid_file(target: str, pid_file: Path, signum: signal.Signals, *, code: str) -> int:
    """Send ``signum`` to the process named by ``pid_file``; returns its PID."""
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise TargetError(
            f"target {target}: cannot read the pid file {pid_file}: {exc.strerror}",
            code=code,
            hint="is the server running, and is pid_file the path of its pid file?",
        ) from exc
    if not text.isdigit() or int(text) <= 1:
        raise TargetError(f"target {target}: the pid file {pid_file} holds no process id", code=code)
    pid = int(text)
    try:
        os.kill(pid, signum)
    except ProcessLookupError as exc:
        raise TargetError(
            f"target {target}: no process {pid} (from {pid_file}) to send {signum.name} to",
            code=code,
            hint="the server is not running: start it, then apply again",
        ) from exc
    except PermissionError as exc:
        raise TargetError(
            f"target {target}: not allowed to send {signum.name} to process {pid} (from {pid_file})",
            code=code,
            hint="run certreconcile as the server's user, or use reload_command",
        ) from exc
    return pid


@contextlib.contextmanager
def locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (created when missing) for the block."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def locked_instance(lock_file: Path | None, directory: Path) -> Iterator[None]:
    """One deployment at a time per server instance: ``flock`` on ``lock_file`` (its pid file) when
    it exists, else on ``directory``. The directory is locked too, for targets without a pid file."""
    fd = -1
    if lock_file is not None:
        try:
            fd = os.open(lock_file, os.O_RDONLY)
        except OSError:
            fd = -1  # not running (or not readable): the directory lock alone
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        with locked_directory(directory):
            yield
    finally:
        if fd >= 0:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class ServerActions:
    """How one deployment to a running server is checked and made live, bound to its target."""

    server: str  # "nginx", for messages
    lock: Callable[[], contextlib.AbstractContextManager[None]]  # one batch at a time per instance
    check: Callable[[], None]  # the configuration test; raises TargetError
    reload: Callable[[], None]  # raises TargetError


@dataclass(eq=False, slots=True)
class _Deployment:
    files: FileSet
    actions: ServerActions
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Deployments to one server instance, tested and reloaded together (a group commit).

    Many targets can point at one server (one nginx, a hundred server blocks): deployed one by
    one, each would run the configuration test and reload the server, and the test alone parses
    every certificate the server loads. Here the deployments that arrive while a batch is being
    tested wait, and the next batch takes all of them: one test and one reload for the lot. When
    a batch's test fails, its files are put back and each deployment is retried alone, so a
    failure names the deployment that caused it and the others still go live.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[Hashable, list[_Deployment]] = {}
        self._leading: set[Hashable] = set()

    def deploy(self, instance: Hashable, files: FileSet, actions: ServerActions) -> None:
        """Write ``files``, test and reload the server ``instance``; return once live, or raise."""
        mine = _Deployment(files, actions)
        with self._cond:
            self._pending.setdefault(instance, []).append(mine)
            while not mine.done:
                if instance in self._leading:
                    self._cond.wait()
                    continue
                batch = self._pending.pop(instance)
                self._leading.add(instance)
                self._cond.release()
                try:
                    _commit(batch)
                finally:
                    self._cond.acquire()
                    self._leading.discard(instance)
                    for deployment in batch:
                        deployment.done = True
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error


def _commit(batch: list[_Deployment]) -> None:
    """Deploy ``batch`` (never raises: each deployment's outcome is set on it)."""
    first = batch[0].actions
    try:
        with first.lock():
            if len(batch) > 1 and _commit_together(batch):
                return
            for deployment in batch:
                try:
                    _commit_one(deployment)
                except BaseException as exc:  # noqa: BLE001 - the deployment's outcome, raised in its thread
                    deployment.error = exc
    except BaseException as exc:  # noqa: BLE001 - the lock could not be taken: every deployment fails
        for deployment in batch:
            if deployment.error is None:
                deployment.error = exc


def _commit_together(batch: list[_Deployment]) -> bool:
    """One test and one reload for ``batch``; False (files put back) if the test fails."""
    snapshots: list[PemFolderSnapshot] = []
    try:
        for deployment in batch:
            snapshots.append(PemFolderSnapshot.take(deployment.files))
            write_file_set(deployment.files)
        batch[0].actions.check()
    except (TargetError, OSError):
        for snapshot in reversed(snapshots):
            snapshot.restore()
        return False
    try:
        batch[0].actions.reload()
    except TargetError:
        for deployment in batch:  # each with its own target's message
            try:
                deployment.actions.reload()
            except TargetError as exc:
                deployment.error = exc
    return True


def _commit_one(deployment: _Deployment) -> None:
    actions = deployment.actions
    snapshot = PemFolderSnapshot.take(deployment.files)
    write_file_set(deployment.files)
    try:
        actions.check()
    except TargetError as exc:
        snapshot.restore()
        raise TargetError(
            f"{exc.message} ({snapshot.describe_restore()}, {actions.server} not reloaded)",
            code=exc.code,
            hint=exc.hint,
        ) from None
    actions.reload()

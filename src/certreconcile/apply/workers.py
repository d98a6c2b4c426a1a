"""``apply --workers N``: one apply's changes run by N processes, coordinated through PostgreSQL.

The interpreter lock holds one process to one core; the changes of an apply are independent (each
runs under its name's advisory lock and re-checks, under it, that it is still needed, as ``run``
replicas do), so they can run in several processes. The parent did everything up to here (plan,
checks, confirmation, the lifecycle moves) and opened the one run of this apply (its id, its
actor); it does the closing (the run's outcome, the serial, notifications) once all results are in.

- The processes start from a fork server (``forkserver``: a clean process that imported the modules
  once, never the parent with its threads and connections). Each builds its own environment through
  the ``wiring`` it is given (store connections, KMS, issuers, targets: the same wiring as the parent's);
  what crosses the pipe is the declarations, the changes, the run id and the wiring's settings, never
  a key (each worker asks the KMS itself).
- Once every worker is ready, the parent hands out change indexes: two per thread of each worker
  (one running, one waiting in the pipe, so a thread never waits for the parent), then the next one
  to whichever returns a result: the load stays balanced.
- Results stream back; the parent reports progress and builds the result as one process would.
- A worker that dies fails the changes it had started (``worker-died``, the name is not backed off:
  the journal lets the next apply finish them); those it had not started go back to the others,
  which go on with the remaining changes.
"""

from __future__ import annotations

import contextlib
import copyreg
import gc
import io
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import sys
import threading
import types
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from certreconcile.apply.executor import run_changes
from certreconcile.apply.results import ApplyEnvironment, ChangeResult, WorkerReport
from certreconcile.apply.runner import ChangeRunner
from certreconcile.desired.model import DesiredState
from certreconcile.errors import ApplyError, CertReconcileError
from certreconcile.plan.plan import Action, Change

__all__ = ["WorkerWiring", "refuse_unshareable", "run_in_processes"]

log = logging.getLogger("certreconcile.apply")

CODE_WORKER_DIED = "worker-died"
CODE_WORKER_START = "worker-start-failed"


class WorkerWiring(Protocol):
    """How a worker process builds its environment (picklable: it crosses to the worker)."""

    def build(self, desired: DesiredState) -> ApplyEnvironment:
        """The environment of this process (its own store connections, KMS, issuers, targets)."""
        ...

    def finish(self, env: ApplyEnvironment) -> None:
        """After the worker's last change (e.g. record the agents' contacts)."""
        ...


def refuse_unshareable(changes: tuple[Change, ...], desired: DesiredState) -> None:
    """Refuse worker processes when a change answers HTTP-01 on a standalone listener.

    The listener binds one port in one process (never ``SO_REUSEPORT``: the CA's request could reach a
    process that does not hold the token); webroot and DNS-01 work from any number of processes.
    """
    for change in changes:
        if change.action not in (Action.ISSUE, Action.ROTATE) or change.issuer is None:
            continue
        spec = desired.certificates.get(change.name)
        issuer = desired.issuers.get(change.issuer)
        if spec is None or issuer is None or spec.challenge == "dns-01" or issuer.kind != "acme":
            continue
        http01 = getattr(issuer.config, "http01", None)
        if http01 is not None and getattr(http01, "standalone", None) is not None:
            raise ApplyError(
                f"apply --workers: issuer {change.issuer!r} answers HTTP-01 on a standalone listener, which "
                f"binds its port in one process only ({change.name} needs it); nothing was changed",
                code="workers-http01-standalone",
                hint="use --workers 1, or give the issuer http01.webroot (or the certificates DNS-01)",
            )


# --- the parent -----------------------------------------------------------------


@dataclass
class _Worker:
    number: int
    process: Any  # multiprocessing's process object (its type depends on the context)
    tasks: Connection  # parent → worker: a change index, or None (stop)
    results: Connection  # worker → parent: ready, result, bye
    held: set[int] = field(default_factory=set)  # handed to it, no result yet
    started: set[int] = field(default_factory=set)  # of which a thread of it took up
    returned: int = 0
    ready: bool = False
    open: bool = True
    cpu_seconds: float | None = None
    start_cpu_seconds: float | None = None
    start_error: str | None = None
    pid: int = 0


def run_in_processes(
    changes: tuple[Change, ...],
    desired: DesiredState,
    env: ApplyEnvironment,
    run_id: int,
    concurrency: int,
    workers: int,
    wiring: WorkerWiring,
) -> tuple[tuple[ChangeResult, ...], tuple[WorkerReport, ...]]:
    """Run ``changes`` in ``workers`` processes of ``concurrency`` threads; the results in plan order."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_preload())
    payload = _dumps((desired, changes, run_id, concurrency, wiring))
    pool = [_start(context, payload, number) for number in range(min(workers, len(changes)))]
    dispatch = _Dispatch(changes, env, concurrency)
    try:
        dispatch.run(pool)
    finally:
        for worker in pool:
            _stop(worker)
    dispatch.fail_lost(desired, env, run_id, pool)
    reports = tuple(WorkerReport(w.pid, w.returned, w.cpu_seconds, w.start_cpu_seconds) for w in pool)
    return tuple(result for result in dispatch.results if result is not None), reports


def _start(context: Any, payload: bytes, number: int) -> _Worker:
    tasks_read, tasks_write = context.Pipe(duplex=False)
    results_read, results_write = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker_main, args=(payload, tasks_read, results_write), name=f"certreconcile-apply-{number}"
    )
    process.start()
    tasks_read.close()  # the worker's ends: closed here, so its death reads as end-of-file
    results_write.close()
    return _Worker(number, process, tasks_write, results_read, pid=process.pid or 0)


def _stop(worker: _Worker) -> None:
    with contextlib.suppress(OSError):
        worker.tasks.close()
    worker.process.join(timeout=30)
    if worker.process.is_alive():  # interrupted (Ctrl-C) or stuck: it must not outlive the apply
        worker.process.terminate()
        worker.process.join(timeout=10)
    worker.results.close()


class _Dispatch:
    """The parent's loop: hand out change indexes, collect results, notice workers that end."""

    def __init__(self, changes: tuple[Change, ...], env: ApplyEnvironment, concurrency: int) -> None:
        self.changes = changes
        self.env = env
        self.concurrency = concurrency
        self.pending = deque(range(len(changes)))
        self.results: list[ChangeResult | None] = [None] * len(changes)

    def run(self, pool: list[_Worker]) -> None:
        while any(w.open and not w.ready for w in pool):  # every worker ready (or gone) before the first change
            self._receive(pool)
        for _ in range(2 * self.concurrency):  # round robin: each worker gets its first changes
            for worker in pool:
                if worker.open and worker.ready:
                    self._give(worker)
        while any(w.open for w in pool):
            self._receive(pool)

    def _receive(self, pool: list[_Worker]) -> None:
        live = [w for w in pool if w.open]
        ready = wait([w.results for w in live])
        for worker in (w for w in live if w.results in ready):
            try:
                message = worker.results.recv()
            except (EOFError, OSError):
                worker.open = False
                self._requeue(worker)
                continue
            self._handle(worker, message)

    def _requeue(self, worker: _Worker) -> None:
        """A worker ended: the changes it held and had not started go back to the front of the queue."""
        waiting = sorted(worker.held - worker.started)
        worker.held -= set(waiting)
        self.pending.extendleft(reversed(waiting))

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready, worker.pid, worker.start_cpu_seconds = True, message[1], message[2]
        elif kind == "start-failed":
            worker.start_error = message[1]
            log.warning("apply: worker process %s could not start: %s", worker.pid, message[1])
        elif kind == "started":
            worker.started.add(message[1])
        elif kind == "bye":
            worker.cpu_seconds = message[1]
        elif kind == "result":
            index, fields = message[1], message[2]
            worker.held.discard(index)
            worker.started.discard(index)
            worker.returned += 1
            self._record(index, ChangeResult(self.changes[index], **fields))
            self._give(worker)

    def _give(self, worker: _Worker) -> None:
        index = self.pending.popleft() if self.pending else None
        try:
            worker.tasks.send(index)
        except OSError:  # it died: the change goes back to the others
            if index is not None:
                self.pending.appendleft(index)
            return
        if index is not None:
            worker.held.add(index)

    def fail_lost(self, desired: DesiredState, env: ApplyEnvironment, run_id: int, pool: list[_Worker]) -> None:
        """The changes of workers that ended holding them, and those no worker was left to take: failed."""
        lost: list[tuple[int, str]] = []
        for worker in pool:
            code = worker.process.exitcode
            for index in sorted(worker.held):  # started (the others were handed to the other workers)
                lost.append((index, f"the worker process {worker.pid} ended (exit code {code}) while applying it"))
        started = [w for w in pool if w.ready]
        why = "no worker process could start" if not started else "every worker process ended before taking it"
        errors = sorted({w.start_error for w in pool if w.start_error})
        if errors:
            why += f" ({errors[0]})"
        lost += [(index, why) for index in self.pending]
        if not lost:
            return
        code = CODE_WORKER_DIED if started else CODE_WORKER_START
        hint = "apply again: the journal lets the next apply finish the change"
        failures = {index: CertReconcileError(message, code=code, hint=hint) for index, message in lost}
        try:
            with env.store.session() as session:
                runner = ChangeRunner(session, desired, env, run_id)
                for index, error in sorted(failures.items()):
                    self._record(index, runner._failed(self.changes[index], error))  # audited, journalled
        except CertReconcileError:  # the store is failing too: reported, not recorded
            for index, error in sorted(failures.items()):
                if self.results[index] is None:
                    result = ChangeResult(self.changes[index], "failed", error.one_line(), error_code=code)
                    self._record(index, result)

    def _record(self, index: int, result: ChangeResult) -> None:
        self.results[index] = result
        if self.env.on_progress is not None:
            self.env.on_progress(result)


def _preload() -> list[str]:
    """What the fork server imports once, for every worker: the modules of certreconcile this process loaded.

    Its wiring's plug-ins (and what they import: the ACME library, cryptography, psycopg), and the
    command line, which each worker imports again as its main module (``multiprocessing`` runs the
    parent's main script in the child, guarded by ``__name__``): imported once, shared by every fork.
    """
    loaded = sorted(name for name in sys.modules if name.startswith("certreconcile.") and not name.endswith("__main__"))
    return ["certreconcile.apply.workers", "certreconcile.wiring", *loaded]


def _frozen(items: dict[Any, Any]) -> Mapping[Any, Any]:
    return types.MappingProxyType(items)


def _dumps(value: object) -> bytes:
    """Pickle the declarations (their read-only mappings as such: ``mappingproxy`` has no pickling of its own)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[types.MappingProxyType] = lambda proxy: (_frozen, (dict(proxy),))
    pickler.dump(value)
    return buffer.getvalue()


# --- the worker -----------------------------------------------------------------


def _worker_main(payload: bytes, tasks: Connection, results: Connection) -> None:
    """A worker process: build the environment, run the changes handed out, say goodbye with the CPU used."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    # The modules the fork server imported are shared with it until written: the collector must not
    # walk them (it would cost CPU and copy their pages); they live as long as the process anyway.
    gc.freeze()
    try:
        desired, changes, run_id, concurrency, wiring = pickle.loads(payload)  # noqa: S301  from our parent
        env: ApplyEnvironment = wiring.build(desired)
    except Exception as exc:  # noqa: BLE001  reported to the parent, which fails the changes
        message = exc.one_line() if isinstance(exc, CertReconcileError) else type(exc).__name__
        results.send(("start-failed", message))
        return
    results.send(("ready", os.getpid(), _cpu_seconds()))
    receiving, sending = threading.Lock(), threading.Lock()

    def take() -> tuple[int, Change] | None:
        with receiving:
            try:
                index = tasks.recv()
            except (EOFError, OSError):  # the parent is gone
                return None
        if index is None:
            return None
        with sending:
            results.send(("started", index))
        return index, changes[index]

    def done(index: int, result: ChangeResult) -> None:
        fields = {
            "outcome": result.outcome,
            "message": result.message,
            "cert_id": result.cert_id,
            "failed_targets": result.failed_targets,
            "error_code": result.error_code,
            "serial": result.serial,
        }
        with sending:
            results.send(("result", index, fields))

    run_changes(take, done, desired, env, run_id, concurrency, threads=concurrency)
    wiring.finish(env)
    results.send(("bye", _cpu_seconds()))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

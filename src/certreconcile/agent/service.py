"""``certreconcile agent``: run the agent until SIGTERM or SIGINT; SIGHUP re-reads its configuration.

Order at start: the environment must hold no database or KMS setting, the configuration file must be
valid, the agent's certificate must be its key's and carry its name; then it listens. A stop lets the
requests in flight finish.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from certreconcile.agent.config import AgentConfigError, load_agent_config
from certreconcile.agent.environment import check_environment
from certreconcile.agent.runtime import AgentRuntime, build_runtime
from certreconcile.agent.server import AgentHttpServer, logger
from certreconcile.clock import Clock, clock_from_env
from certreconcile.errors import CertReconcileError, ConfigError

__all__ = ["serve", "start"]


def start(config_path: Path, env: Mapping[str, str]) -> AgentHttpServer:
    """A bound (not yet serving) agent server for ``config_path``; ConfigError when it may not start."""
    check_environment(env)
    config = load_agent_config(config_path)
    try:
        clock: Clock = clock_from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc), code="agent-config-invalid", hint="unset CERTRECONCILE_TEST_NOW") from None
    runtime = build_runtime(config, env, clock)
    try:
        return AgentHttpServer(runtime, config.listen_host, config.listen_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror}",
            code="agent-listen-failed",
            hint="choose a free address in `listen`, or stop what holds it",
        ) from exc


def serve(config_path: Path, env: Mapping[str, str]) -> None:
    """Serve until SIGTERM/SIGINT (graceful: requests in flight finish); SIGHUP reloads the configuration."""
    server = start(config_path, env)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="agent-accept")
    with _signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) as next_signal:
        thread.start()
        runtime = server.runtime
        host, port = server.server_address[:2]
        targets = ", ".join(runtime.targets) or "none"
        logger.info("agent %s: listening on %s:%s (local targets: %s)", runtime.config.name, host, port, targets)
        try:
            while (signum := next_signal()) == signal.SIGHUP:
                _reload(server, config_path, env)
            logger.info("agent %s: stopping (%s)", server.runtime.config.name, signal.Signals(signum).name)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


@contextlib.contextmanager
def _signals(handled: tuple[signal.Signals, ...]) -> Iterator[Callable[[], int]]:
    """A function returning each of ``handled`` as it arrives, whichever thread the kernel delivered it to.

    The signal numbers are written to a socket pair by the interpreter's C-level handler
    (``set_wakeup_fd``), so the main thread wakes even when another thread took the signal.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in handled}
    pending: list[int] = []

    def next_signal() -> int:
        while not pending:
            select.select([reader], [], [])
            pending.extend(number for number in reader.recv(64) if number in handled)
        return pending.pop(0)

    try:
        yield next_signal
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()


def _reload(server: AgentHttpServer, config_path: Path, env: Mapping[str, str]) -> None:
    """Re-read the configuration; on any problem keep running with the previous one."""
    current: AgentRuntime = server.runtime
    try:
        config = load_agent_config(config_path)
        runtime = build_runtime(config, env, current.clock, previous=current)
    except AgentConfigError as exc:
        for diagnostic in exc.diagnostics:
            logger.error("%s", diagnostic)
        logger.error("agent %s: reload refused, still serving the previous configuration", current.config.name)
        return
    except CertReconcileError as exc:
        logger.error("agent %s: reload refused: %s", current.config.name, exc.one_line())
        return
    if (config.listen_host, config.listen_port) != (current.config.listen_host, current.config.listen_port):
        logger.warning("agent %s: `listen` changed: restart the agent to listen there", config.name)
    server.runtime = runtime
    logger.info("agent %s: configuration reloaded (local targets: %s)", config.name, ", ".join(runtime.targets))



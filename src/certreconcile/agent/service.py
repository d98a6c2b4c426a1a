"""``certreconcile agent``: run the agent until SIGTERM or SIGINT; SIGHUP re-reads its configuration.

Order at start: the environment must hold no database or KMS setting, the configuration file must be
valid, the agent's certificate must be its key's and carry its name; then it listens. A stop lets the
requests in flight finish.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

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
    received: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is safe in a signal handler

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.put(signum)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="agent-accept")
    thread.start()
    runtime = server.runtime
    host, port = server.server_address[:2]
    targets = ", ".join(runtime.targets) or "none"
    logger.info("agent %s: listening on %s:%s (local targets: %s)", runtime.config.name, host, port, targets)
    try:
        while (signum := received.get()) == signal.SIGHUP:
            _reload(server, config_path, env)
        logger.info("agent %s: stopping (%s)", server.runtime.config.name, signal.Signals(signum).name)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

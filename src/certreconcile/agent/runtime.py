"""What a running agent holds: its configuration, its local targets, its TLS identity, the nonces seen, its clock.

Built from the configuration file at start and again on SIGHUP (the nonce cache and the TLS identity
carry over; the listen address needs a restart). Holds no database and no KMS.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from certreconcile.agent.config import AgentConfig
from certreconcile.agent.identity import ContextHolder, build_server_context, check_own_certificate
from certreconcile.agent.nonces import NonceCache
from certreconcile.clock import Clock
from certreconcile.plugins.context import PluginContext, create_target
from certreconcile.plugins.ports import Target

__all__ = ["AgentRuntime", "build_runtime"]


@dataclass(slots=True)
class AgentRuntime:
    config: AgentConfig
    targets: Mapping[str, Target]  # the local targets, by name
    identity: ContextHolder  # the current server context and the facts of its certificate
    nonces: NonceCache
    clock: Clock
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_lock: threading.Lock = field(default_factory=threading.Lock)
    certificate_lock: threading.Lock = field(default_factory=threading.Lock)  # one renewal at a time

    def lock_for(self, target: str) -> threading.Lock:
        """One deployment at a time per local target."""
        with self._locks_lock:
            return self._locks.setdefault(target, threading.Lock())


def build_runtime(
    config: AgentConfig, env: Mapping[str, str], clock: Clock, previous: AgentRuntime | None = None
) -> AgentRuntime:
    """The runtime of ``config``: its certificate checked, its server context built, its targets made.

    ``previous`` (a reload): its nonces are kept, so a request seen before the reload is still a replay.
    """
    facts = check_own_certificate(config.tls, config.name)
    context = build_server_context(config.tls)
    plugin_context = PluginContext(desired_dir=config.path.resolve().parent, data_dir=config.state_dir, env=env)
    targets = {name: create_target(spec, plugin_context) for name, spec in config.targets.items()}
    if previous is not None:
        nonces = previous.nonces
        nonces.set_window(config.request_window)
        identity = previous.identity
        identity.replace(context, facts)
    else:
        nonces = NonceCache(config.request_window)
        identity = ContextHolder(context, facts)
    return AgentRuntime(config=config, targets=targets, identity=identity, nonces=nonces, clock=clock)

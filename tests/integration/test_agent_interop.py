"""The applier's own client (certreconcile.fleet) against the real agent process: the two halves of the contract meet.

The applier side here is CENTRAL's :class:`~certreconcile.fleet.target.AgentTarget` over
:class:`~certreconcile.fleet.client.AgentClient`, with an applier certificate of the test fleet CA; the
agent is ``python -m certreconcile agent`` with a files target. A deployment is verified and read
back; an unknown local target is the agent's own registered code; a stranger's client certificate
never gets an answer (``agent-unreachable``); an agent answering under another name is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from certreconcile.clock import SystemClock
from certreconcile.desired.model import AgentTargetRef
from certreconcile.errors import TargetError
from certreconcile.fleet.client import AgentClient, AgentUnreachable
from certreconcile.fleet.identity import client_context
from certreconcile.fleet.target import AgentTarget
from certreconcile.testing.target_contract import self_signed_bundle
from fleet_support import AgentProcess, ClientCert, TestFleet, run_agent, write_agent_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, test_fleet: TestFleet) -> Iterator[AgentProcess]:
    directory = tmp_path_factory.mktemp("interop") / "web-9"
    agent_dir = write_agent_dir(directory, test_fleet, "web-9", {"site": {"files": {"dir": "out"}}})
    with run_agent(agent_dir, test_fleet) as started:
        yield started


def _client(
    agent: AgentProcess, fleet: TestFleet, as_agent: str = "web-9", cert: ClientCert | None = None
) -> AgentClient:
    chosen = cert or fleet.applier
    key = serialization.load_pem_private_key(chosen.key_file.read_bytes(), None)
    context = client_context(chosen.cert_file.read_text(), key, fleet.ca.pem)  # type: ignore[arg-type]
    return AgentClient(as_agent, agent.url, timedelta(seconds=60), lambda: context, SystemClock())


def _target(client: AgentClient, local: str = "site") -> AgentTarget:
    ref = AgentTargetRef(agent=client.name, target=local, url=client.url, timeout_seconds=60)
    return AgentTarget(ref, client)


def test_the_appliers_agent_target_deploys_and_observes(agent: AgentProcess, test_fleet: TestFleet) -> None:
    target = _target(_client(agent, test_fleet))
    bundle = self_signed_bundle("interop", ("interop.example.test",))
    target.deploy(bundle)  # raises unless the agent answered verified with this fingerprint
    seen = target.observe("interop", bundle.domains)
    assert (seen.fingerprint, seen.unreachable, seen.error) == (bundle.fingerprint, False, None)
    # That first observation was the deploy's own proof (the agent's handshake or read-back, just made):
    # no second round trip. The next one asks the agent again.
    assert "observe target=site name=interop" not in agent.log_text()
    again = target.observe("interop", bundle.domains)
    assert again.fingerprint == bundle.fingerprint
    assert agent.log_text().count("observe target=site name=interop") == 1
    served = agent.agent.directory / "out" / "interop" / "privkey.pem"
    assert served.read_bytes() == bundle.key_pem.reveal()


def test_an_unknown_local_target_is_the_agents_registered_code(agent: AgentProcess, test_fleet: TestFleet) -> None:
    target = _target(_client(agent, test_fleet), local="nowhere")
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("interop", ("interop.example.test",)))
    assert caught.value.code == "agent-target-unknown"
    assert "declared: site" in caught.value.message


def test_a_stranger_gets_no_answer_and_a_wrong_name_is_refused(agent: AgentProcess, test_fleet: TestFleet) -> None:
    stranger = _client(agent, test_fleet, cert=test_fleet.applier_other_ca)
    with pytest.raises(AgentUnreachable):
        stranger.call("hello")
    with pytest.raises(TargetError) as caught:
        _client(agent, test_fleet, as_agent="web-1").call("hello")
    assert caught.value.code == "agent-identity-mismatch"

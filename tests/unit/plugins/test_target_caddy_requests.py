"""The caddy target's requests to the admin API, against a small in-memory stand-in (httpx.MockTransport).

The stand-in keeps a config tree and answers like Caddy 2: ``null`` for a missing key of an
existing object, 400 for a path through a missing one, 404 for an unknown ``@id``. The real
Caddy is exercised in tests/integration/test_targets_caddy_envoy_traefik.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from certreconcile.errors import TargetError
from certreconcile.plugins.targets.caddy import CaddyTarget
from certreconcile.plugins.targets.caddy_config import CaddyTargetConfig
from certreconcile.retry import RetryPolicy
from certreconcile.testing import target_contract
from certreconcile.testing.target_contract import bundle_maker

SHOP = bundle_maker("shop", ("shop.example.test",))


class FakeCaddy:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.calls: list[str] = []
        self.echo_body_in_errors = False

    def _walk(self, segments: list[str]) -> tuple[bool, Any]:
        node = self.config
        for segment in segments:
            if isinstance(node, dict):
                node = node.get(segment)
            elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
                node = node[int(segment)]
            else:
                return False, None
        return True, node

    def _find_id(self, node: Any, wanted: str) -> tuple[Any, Any] | None:
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            if isinstance(child, dict) and child.get("@id") == wanted:
                return node, key
            found = self._find_id(child, wanted)
            if found is not None:
                return found
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        body = json.loads(request.content) if request.content else None
        if self.echo_body_in_errors and request.method != "GET":
            key = json.dumps(body.get("key") if isinstance(body, dict) else body)  # JSON-escaped, as Caddy would
            return httpx.Response(400, json={"error": f"refused: key {key}"})
        if path.startswith("/id/"):
            return self._by_id(request.method, path.removeprefix("/id/"), body)
        segments = [segment for segment in path.removeprefix("/config").split("/") if segment]
        if not segments:
            if request.method == "GET":
                return httpx.Response(200, json=self.config)
            self.config = body
            return httpx.Response(200)
        return self._at_path(request.method, segments, body)

    def _by_id(self, method: str, wanted: str, body: Any) -> httpx.Response:
        found = self._find_id(self.config, wanted)
        if found is None:
            return httpx.Response(404, json={"error": "unknown object ID"})
        parent, key = found
        if method == "GET":
            return httpx.Response(200, json=parent[key])
        assert method == "PATCH"
        parent[key] = body
        return httpx.Response(200)

    def _at_path(self, method: str, segments: list[str], body: Any) -> httpx.Response:
        ok, parent = self._walk(segments[:-1])
        if not ok or (parent is None and segments[:-1]):
            return httpx.Response(400, json={"error": f"invalid traversal path at: config/{'/'.join(segments[:-1])}"})
        if method == "GET":
            return httpx.Response(200, json=parent.get(segments[-1]) if isinstance(parent, dict) else None)
        if method == "POST" and isinstance(parent.get(segments[-1]), list):
            parent[segments[-1]].append(body)
            return httpx.Response(200)
        if method == "PUT" and segments[-1] in parent:
            return httpx.Response(409, json={"error": "key already exists"})
        parent[segments[-1]] = body
        return httpx.Response(200)


def _target(fake: FakeCaddy, tags: tuple[str, ...] = ()) -> CaddyTarget:
    config = CaddyTargetConfig(admin="http://caddy.test:2019", tags=tags)
    return CaddyTarget("edge-caddy", config, transport=httpx.MockTransport(fake.handle))


@pytest.mark.parametrize(
    ("config", "creating_call"),
    [
        (None, "POST /config/"),
        ({"apps": {"http": {}}}, "PUT /config/apps/tls"),
        ({"apps": {"tls": {"automation": {}}}}, "PUT /config/apps/tls/certificates"),
        ({"apps": {"tls": {"certificates": {"load_files": []}}}}, "PUT /config/apps/tls/certificates/load_pem"),
        (
            {"apps": {"tls": {"certificates": {"load_pem": [{"tags": ["x"]}]}}}},
            "POST /config/apps/tls/certificates/load_pem",
        ),
    ],
    ids=["no-config", "no-tls-app", "no-certificates", "no-load-pem", "load-pem"],
)
def test_first_deployment_creates_what_is_missing(config: Any, creating_call: str) -> None:
    fake = FakeCaddy(config)
    bundle = SHOP()
    _target(fake, tags=("edge",)).deploy(bundle)
    assert fake.calls[-1] == creating_call
    assert [c for c in fake.calls if not c.startswith("GET")] == [creating_call]
    entries = fake.config["apps"]["tls"]["certificates"]["load_pem"]
    ours = [entry for entry in entries if entry.get("@id") == "certreconcile-shop"]
    assert ours == [
        {
            "@id": "certreconcile-shop",
            "certificate": bundle.fullchain_pem,
            "key": bundle.key_pem.reveal().decode(),
            "tags": ["certreconcile:shop", "edge"],
        }
    ]
    if config is not None:
        assert fake.config["apps"].keys() >= config["apps"].keys()  # the rest stays


def test_redeploy_only_reads_and_rotation_patches_by_id() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": [{"tags": ["other"]}]}}}})
    target, first, second = _target(fake), SHOP(), SHOP()
    target.deploy(first)
    fake.calls.clear()
    target.deploy(first)
    assert fake.calls == ["GET /id/certreconcile-shop"]
    fake.calls.clear()
    target.deploy(second)
    assert fake.calls == ["GET /id/certreconcile-shop", "PATCH /id/certreconcile-shop"]
    entries = fake.config["apps"]["tls"]["certificates"]["load_pem"]
    assert [entry["tags"] for entry in entries] == [["other"], ["certreconcile:shop"]]
    assert entries[1]["key"] == second.key_pem.reveal().decode()
    assert target.observe("shop", second.domains).fingerprint == second.fingerprint


def test_an_answer_echoing_the_key_is_scrubbed() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": []}}}})
    fake.echo_body_in_errors = True
    target_contract.check_errors_hold_no_key(lambda: _target(fake), SHOP)
    with pytest.raises(TargetError) as raised:
        _target(fake).deploy(SHOP())
    assert raised.value.code == "target-rejected"
    assert "Caddy answered POST /config/apps/tls/certificates/load_pem with 400: refused:" in raised.value.message
    assert "<redacted>" in raised.value.message


def test_a_non_json_answer_is_a_target_error() -> None:
    target = CaddyTarget(
        "edge-caddy",
        CaddyTargetConfig(),
        transport=httpx.MockTransport(lambda request: httpx.Response(200, text="<html>not caddy</html>")),
    )
    with pytest.raises(TargetError) as raised:
        target.deploy(SHOP())
    assert "something other than JSON" in raised.value.message


# ---------------------------------------------------------------- dropped connections
# Caddy replaces its admin listener on every config load; a connection landing on the old one
# is dropped (tests/integration saw ECONNRESET on CI). A deployment runs again from its read.


class Dropping:
    """FakeCaddy behind a transport that drops the connection on the calls listed in ``drop``.

    ``after``: the dropped request is applied first (the answer is what got lost).
    """

    def __init__(self, fake: FakeCaddy, drop: set[int], *, after: bool = False, error: type = httpx.ReadError) -> None:
        self.fake, self.drop, self.after, self.error, self.count = fake, drop, after, error, 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        if self.count in self.drop:
            if self.after:
                self.fake.handle(request)
            raise self.error("[Errno 104] Connection reset by peer", request=request)
        return self.fake.handle(request)


def _dropping_target(transport: Dropping) -> tuple[CaddyTarget, list[float]]:
    slept: list[float] = []
    retry = RetryPolicy(attempts=4, total=5.0, first_delay=0.05, max_delay=0.5, sleep=slept.append)
    config = CaddyTargetConfig(admin="http://caddy.test:2019")
    return CaddyTarget("edge-caddy", config, transport=httpx.MockTransport(transport.handle), retry=retry), slept


def _load_pem(fake: FakeCaddy) -> list[Any]:
    return list(fake.config["apps"]["tls"]["certificates"]["load_pem"])


def test_a_dropped_read_runs_the_deployment_again() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": [{"tags": ["other"]}]}}}})
    target, slept = _dropping_target(Dropping(fake, {1}))
    bundle = SHOP()
    target.deploy(bundle)
    assert slept == [0.05]
    assert [entry["tags"] for entry in _load_pem(fake)] == [["other"], ["certreconcile:shop"]]
    assert target.observe("shop", bundle.domains).fingerprint == bundle.fingerprint


def test_a_write_that_landed_before_the_drop_is_not_repeated() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": [{"tags": ["other"]}]}}}})
    # Calls: GET /id (404), GET /config/, GET apps, GET tls, GET certificates, GET load_pem, POST (dropped after).
    target, slept = _dropping_target(Dropping(fake, {7}, after=True, error=httpx.RemoteProtocolError))
    target.deploy(SHOP())
    assert len(slept) == 1
    assert fake.calls[6:] == ["POST /config/apps/tls/certificates/load_pem", "GET /id/certreconcile-shop"]
    assert [entry["tags"] for entry in _load_pem(fake)] == [["other"], ["certreconcile:shop"]]


def test_a_refused_connection_is_not_retried_and_a_lasting_drop_gives_up() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": []}}}})
    target, slept = _dropping_target(Dropping(fake, {1}, error=httpx.ConnectError))
    with pytest.raises(TargetError) as raised:
        target.deploy(SHOP())
    assert (raised.value.code, slept) == ("target-unreachable", [])
    always = Dropping(fake, set(range(1, 100)))
    target, slept = _dropping_target(always)
    target_contract.check_errors_hold_no_key(lambda: target, SHOP)
    slept.clear()
    always.count = 0
    with pytest.raises(TargetError) as raised:
        target.deploy(SHOP())
    assert raised.value.code == "target-unreachable"
    assert "ReadError" in raised.value.message
    assert (always.count, slept) == (4, [0.05, 0.1, 0.2])
    assert _load_pem(fake) == []


def test_observe_reads_again_after_a_drop() -> None:
    fake = FakeCaddy({"apps": {"tls": {"certificates": {"load_pem": []}}}})
    target, _ = _dropping_target(Dropping(fake, set()))
    bundle = SHOP()
    target.deploy(bundle)
    dropping = Dropping(fake, {1})
    target, slept = _dropping_target(dropping)
    assert target.observe("shop", bundle.domains).fingerprint == bundle.fingerprint
    assert (dropping.count, slept) == (2, [0.05])

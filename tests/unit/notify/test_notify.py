"""Notifications without servers: the signature, the events and their keys, the outbox's retries and audit.

The delivery runs against the in-memory store (same contract as PostgreSQL) and a recording sender
standing in for a receiver; the clock is a FixedClock that the test moves past each backoff.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from standardwebhooks.webhooks import Webhook

from certreconcile.actual.model import ActualState, AgentRecord, IssuanceBackoff
from certreconcile.actual.outbox import NotificationState
from certreconcile.apply.results import ChangeResult
from certreconcile.audit.events import AuditAction
from certreconcile.clock import FixedClock
from certreconcile.desired import load_desired
from certreconcile.desired.model import NotifySinkSpec, NotifySpec
from certreconcile.desired.notify_sinks import WebhookSinkConfig
from certreconcile.errors import NotifyError
from certreconcile.notify.events import NotifyEvent, agent_events, apply_events
from certreconcile.notify.message import Message, message_for
from certreconcile.notify.outbox import MAX_ATTEMPTS, deliver_due, enqueue, retry_delay
from certreconcile.notify.senders import Sender, sign, webhook_secret
from certreconcile.plan.plan import Action, Change
from certreconcile.testing.fake_repository import InMemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "notify"


def test_signature_is_the_standard_webhooks_one() -> None:
    body = b'{"type":"certificate.issued","data":{"name":"shop"}}'
    now = datetime.now(UTC).replace(microsecond=0)
    signature = sign(webhook_secret("hook", SECRET), "msg_1", int(now.timestamp()), body)
    key = bytes(range(32))
    by_hand = base64.b64encode(hmac.new(key, f"msg_1.{int(now.timestamp())}.".encode() + body, hashlib.sha256).digest())
    assert signature == "v1," + by_hand.decode()
    assert signature == Webhook(SECRET).sign("msg_1", now, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
    assert Webhook(SECRET).verify(body, headers)["data"] == {"name": "shop"}


@pytest.mark.parametrize("text", ["abc", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()])
def test_malformed_webhook_secrets_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(NotifyError) as caught:
        webhook_secret("hook", text)
    assert caught.value.code == "notify-secret-invalid"
    assert text.removeprefix("whsec_") not in caught.value.one_line() or text == "whsec_"


def test_retry_delay_doubles_from_30_seconds_up_to_an_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def change(action: Action, name: str = "shop", replaces: str | None = None) -> Change:
    return Change(action, name, (), ("shop.example.test",), "ca", "ecdsa-p256", ("web",), replaces=replaces,
                  idempotency_key=f"idem-{name}-{action.value}")  # fmt: skip


def test_apply_events_and_their_keys() -> None:
    backoff = IssuanceBackoff(2, T0, T0 + timedelta(hours=2), None)
    stale = IssuanceBackoff(1, T0 - timedelta(days=1), T0 - timedelta(hours=23), None)  # www's earlier failure
    actual = replace(ActualState.empty(), backoffs=MappingProxyType({"api": backoff, "www": stale}))
    results = [
        ChangeResult(change(Action.ISSUE), "done", "issued", cert_id="c1"),
        ChangeResult(change(Action.ROTATE, replaces="c0"), "done", "renewed", cert_id="c2"),
        ChangeResult(change(Action.ROTATE, "api", replaces="c3"), "failed", "refused", error_code="acme-account"),
        ChangeResult(change(Action.ISSUE, "www"), "failed", "CA down", error_code="acme-unreachable"),
        ChangeResult(
            change(Action.ROTATE, replaces="c2"), "failed", "not served", cert_id="c4", failed_targets=("web",)
        ),
        ChangeResult(change(Action.REDISTRIBUTE), "done", "pushed", cert_id="c4"),
        ChangeResult(change(Action.REDISTRIBUTE, "api"), "failed", "store down", error_code="database-unavailable"),
    ]
    events = list(apply_events(results, actual))
    assert [(e.event, e.name, e.key) for e in events] == [
        ("issued", "shop", "issued:c1"),
        ("renewed", "shop", "renewed:c2"),
        ("failed", "api", f"failed:api:{T0.isoformat()}"),
        ("failed", "www", "failed:www:idem-www-issue"),
        ("verification_failed", "shop", "verification_failed:c4:web"),
        ("failed", "api", "failed:api:idem-api-redistribute"),
    ]
    assert events[2].data["error_code"] == "acme-account"
    assert events[2].data["next_attempt_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert "next_attempt_at" not in events[3].data  # not the name's fault: retried next cycle


def test_agent_unreachable_is_one_event_per_outage() -> None:
    agent = AgentRecord(
        "web-1", "01", "f" * 64, T0, T0 + timedelta(days=30), T0, last_seen_at=T0, last_error="timed out"
    )
    first = list(agent_events(replace(ActualState.empty(), agents={"web-1": agent})))
    again = list(agent_events(replace(ActualState.empty(), agents={"web-1": replace(agent, last_error="refused")})))
    later = replace(agent, last_seen_at=T0 + timedelta(hours=1))
    next_outage = list(agent_events(replace(ActualState.empty(), agents={"web-1": later})))
    assert first[0].key == again[0].key != next_outage[0].key
    assert list(agent_events(replace(ActualState.empty(), agents={"web-1": replace(agent, last_error=None)}))) == []


class Recorder:
    """Stands in for a receiver: records each message, or refuses while ``down``."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.down = False

    def factory(self, spec: NotifySinkSpec, environ: Mapping[str, str]) -> Sender:
        recorder = self

        class Send:
            def send(self, message: Message, now: datetime) -> None:
                if recorder.down:
                    raise NotifyError("notify sink hook: POST failed (ConnectError)")
                recorder.sent.append(message)

        return Send()


def notify_spec() -> NotifySpec:
    config = WebhookSinkConfig(url="https://hooks.example.test/x", secret_env="HOOK_SECRET")
    return NotifySpec({"hook": NotifySinkSpec("hook", "webhook", config, "f", None, frozenset({"issued"}))})


def test_delivery_retries_with_backoff_then_abandons_and_audits() -> None:
    clock = FixedClock(T0)
    store, recorder, spec = InMemoryStore(clock), Recorder(), notify_spec()
    event = NotifyEvent("issued", "shop", "issued:c1", {"not_after": "x"})
    assert enqueue(store, spec, [event, NotifyEvent("failed", "api", "failed:api:1")], T0) == 1  # not subscribed
    assert enqueue(store, spec, [event], T0) == 0
    recorder.down = True
    for attempt in range(1, MAX_ATTEMPTS):
        assert deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory).retried == 1
        assert deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory).retried == 0
        clock.advance(retry_delay(attempt))
    last = deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory)
    assert last.abandoned == 1
    with store.session() as session:
        [row] = session.notifications()
        audit = [e for e in session.audit_events(name="shop") if e.action == AuditAction.NOTIFIED]
    assert (row.state, row.attempts) == (NotificationState.ABANDONED, MAX_ATTEMPTS)
    assert [(a.detail["outcome"], a.detail["sink"]) for a in audit] == [("abandoned", "hook")]


def test_a_receiver_back_up_gets_the_same_message_once() -> None:
    clock = FixedClock(T0)
    store, recorder, spec = InMemoryStore(clock), Recorder(), notify_spec()
    enqueue(store, spec, [NotifyEvent("issued", "shop", "issued:c1")], T0)
    recorder.down = True
    deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory)
    recorder.down = False
    clock.advance(timedelta(seconds=29))
    deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory)
    assert recorder.sent == []  # not due yet
    clock.advance(timedelta(seconds=1))
    for _ in range(2):
        deliver_due(store, spec, clock, "automation:renewal", {}, senders=recorder.factory)
    assert len(recorder.sent) == 1
    with store.session() as session:
        assert message_for(session.notifications()[0].row) == recorder.sent[0]  # the same bytes each attempt
    body = json.loads(recorder.sent[0].body)
    assert body == {"type": "certificate.issued", "timestamp": "2026-03-01T12:00:00Z",
                    "data": {"event": "issued", "name": "shop"}}  # fmt: skip


def test_a_sink_no_longer_declared_is_abandoned() -> None:
    clock = FixedClock(T0)
    store, recorder = InMemoryStore(clock), Recorder()
    enqueue(store, notify_spec(), [NotifyEvent("issued", "shop", "issued:c1")], T0)
    assert deliver_due(store, NotifySpec({}), clock, "automation:renewal", {}, senders=recorder.factory).abandoned == 1
    assert recorder.sent == []


def test_the_example_loads_with_its_sinks() -> None:
    desired = load_desired(EXAMPLE)
    assert desired.notify is not None
    assert desired.notify.expiring_within == timedelta(days=14)
    assert {name: spec.kind for name, spec in desired.notify.sinks.items()} == {
        "chat": "apprise", "ops-mail": "email", "ops-webhook": "webhook"}  # fmt: skip
    assert desired.notify.sinks["ops-mail"].events == frozenset({"failed", "expiring"})
    assert len(desired.notify.sinks["chat"].events) == 6


def test_an_unreachable_agent_is_told_once_per_outage(tmp_path: Path) -> None:
    from certreconcile.actual.store import AgentCertificateRow
    from certreconcile.notify.hook import notify_after

    (tmp_path / "notify.yaml").write_text(
        "notify:\n  sinks:\n    hook:\n      webhook: {url: 'https://hooks.example.test/x', secret_env: S}\n"
        "      events: [agent_unreachable]\n"
    )
    desired = load_desired(tmp_path)
    clock = FixedClock(T0)
    store, recorder = InMemoryStore(clock), Recorder()
    row = AgentCertificateRow("web-1", "01", "a" * 64, "PEM", T0, T0 + timedelta(days=30))
    with store.session() as session:
        session.enroll_agent(row, T0, replace=False)
        session.record_agent_contact("web-1", T0, None)
        session.record_agent_contact("web-1", T0 + timedelta(minutes=1), "error[agent-unreachable]: timed out")

    def cycle() -> None:
        notify_after(desired, store, [], clock, "automation:renewal", {}, senders=recorder.factory)

    cycle()
    cycle()
    assert [json.loads(m.body)["data"]["name"] for m in recorder.sent] == ["web-1"]
    assert json.loads(recorder.sent[0].body)["type"] == "agent.unreachable"
    with store.session() as session:
        session.record_agent_contact("web-1", T0 + timedelta(hours=1), None)  # back
        session.record_agent_contact("web-1", T0 + timedelta(hours=2), "error[agent-unreachable]: refused")
    cycle()
    assert len(recorder.sent) == 2  # a new outage, a new event

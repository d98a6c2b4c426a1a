-- certreconcile migration 0014: the notification outbox (`notify:`): each event once per sink.
--
-- A row per (event, sink), claimed by whichever replica inserts it first (INSERT ... ON CONFLICT DO
-- NOTHING on uq_notification_event_sink), then delivered by whichever replica claims it when due
-- (next_attempt_at moves forward as a lease: a claim is an UPDATE of a due row). A failed delivery is
-- retried with backoff (attempts, next_attempt_at); sent rows keep sent_at. payload holds the event's
-- public data (names, dates, error codes), never a secret: a sink's secrets stay in the environment.
CREATE TABLE NotificationOutbox (
    id               BIGSERIAL PRIMARY KEY,
    event_key        TEXT COLLATE "C" NOT NULL,
    sink             TEXT COLLATE "C" NOT NULL,
    event            TEXT NOT NULL,
    name             TEXT NOT NULL,
    cert_id          UUID,
    payload          JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_error       TEXT,
    sent_at          TIMESTAMPTZ,
    CONSTRAINT uq_notification_event_sink UNIQUE (event_key, sink),
    CONSTRAINT chk_notification_state CHECK (state IN ('pending', 'sent', 'abandoned')),
    CONSTRAINT chk_notification_event CHECK (
        event IN ('issued', 'renewed', 'failed', 'verification_failed', 'expiring', 'agent_unreachable')
    ),
    CONSTRAINT chk_notification_attempts CHECK (attempts >= 0)
);

-- The due rows, oldest first: what each delivery pass reads.
CREATE INDEX idx_notification_due ON NotificationOutbox (next_attempt_at) WHERE state = 'pending';

-- A delivered (or abandoned) notification is audited.
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded','expiring_soon','expired','fleet_ca_created','agent_enrolled',
               'agent_renewed','notified')
);

-- schema.sql: the whole current DDL of certreconcile. GENERATED, do not edit:
--   PYTHONPATH=src python -m certreconcile.actual.migrate schema > schema.sql
-- (tests/integration/test_database.py checks it equals the migrated database)

-- ==== 0001_initial ====

-- 0001_initial: the seed's tables (Certificate, CertRotation, CertAudit, with their
-- columns, constraint and index names) plus what the reconciler needs.
--
-- Applied by certreconcile.actual.migrate inside one transaction; the runner records
-- it in SchemaMigration. Never edit a migration once released: add NNNN_next.sql.

-- Bookkeeping of applied migrations (written by the runner, not by migrations).
CREATE TABLE SchemaMigration (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Certificate inventory: one row per certificate ever issued. A name (the desired
-- identity) has many rows over time; its *current* row is its live row (issued,
-- active, expiring_soon) if any, else the newest
-- (created_at, then not_before) row that is not retired and not superseded.
CREATE TABLE Certificate (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    domain             TEXT NOT NULL,                  -- the primary domain (first of the declaration)
    san_domains        JSONB NOT NULL DEFAULT '[]',    -- the other domains, in declared order
    serial_number      TEXT NOT NULL UNIQUE,
    not_before         TIMESTAMPTZ NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    status             TEXT NOT NULL DEFAULT 'issued',
    fingerprint        TEXT NOT NULL,                  -- SHA-256 of the leaf DER, lower-case hex
    key_ref            TEXT NOT NULL,                  -- KMS envelope (JSON) of the private key: ciphertext only
    name               TEXT COLLATE "C" NOT NULL,      -- byte order: sorts like Python strings
    issuer             TEXT NOT NULL,
    key_type           TEXT NOT NULL,
    cert_pem           TEXT NOT NULL,
    chain_pem          TEXT NOT NULL DEFAULT '',
    on_delete          TEXT NOT NULL DEFAULT 'retire',
    issuer_fingerprint TEXT,                           -- digest of the issuer declaration it was issued under
    retired_at         TIMESTAMPTZ,                    -- set: the name is no longer managed by this row
    created_at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT chk_cert_status CHECK (
        status IN ('issued','active','expiring_soon','rotating','expired','revoked','superseded')
    ),
    CONSTRAINT chk_cert_name CHECK (name ~ '^[a-z0-9-]{1,63}$'),
    CONSTRAINT chk_cert_key_type CHECK (
        key_type IN ('ecdsa-p256','ecdsa-p384','rsa-2048','rsa-3072','rsa-4096')
    ),
    CONSTRAINT chk_cert_on_delete CHECK (on_delete IN ('retire','revoke')),
    CONSTRAINT chk_cert_san_domains CHECK (jsonb_typeof(san_domains) = 'array'),
    CONSTRAINT chk_cert_validity CHECK (not_after > not_before)
) WITH (toast_tuple_target = 512);  -- PEMs go out of line, so scans (load_actual) read narrow rows
CREATE INDEX idx_cert_domain ON Certificate(domain);
-- The renewal-window query (status IN ('active','expiring_soon') AND not_after < $1,
-- reading id, name, not_after) is answered from this index alone (Index Only Scan):
-- 1M rows, 1-3% in the window: ~10 ms, against ~140 ms for a sequential scan and
-- more for the seed's plain partial index, which must visit the heap for every hit.
CREATE INDEX idx_cert_not_after ON Certificate(not_after) INCLUDE (id, name)
    WHERE status IN ('active','expiring_soon');
-- At most one live certificate per managed name. 'rotating' is left out on purpose:
-- during a rotation the old row is 'rotating' and its replacement 'issued', and both
-- must coexist; two concurrent issues (or two replacements) of one name still collide.
CREATE UNIQUE INDEX uq_cert_name_live ON Certificate(name)
    WHERE status IN ('issued','active','expiring_soon') AND retired_at IS NULL;
-- Current-row selection (load_actual, current_certificate) walks this index.
CREATE INDEX idx_cert_name_current
    ON Certificate(name, (status IN ('issued','active','expiring_soon')) DESC, created_at DESC, not_before DESC, id DESC)
    WHERE retired_at IS NULL AND status <> 'superseded';

-- Rotation events linking old to new certificate.
CREATE TABLE CertRotation (
    id           BIGSERIAL PRIMARY KEY,
    cert_id      UUID NOT NULL REFERENCES Certificate(id),
    triggered_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    new_cert_id  UUID REFERENCES Certificate(id),
    completed_at TIMESTAMPTZ
);
-- One open rotation per certificate: a resumed apply finds it instead of opening another.
CREATE UNIQUE INDEX uq_rotation_open ON CertRotation(cert_id) WHERE completed_at IS NULL;

-- Append-only audit log. Departure from the seed: cert_id may be NULL, because a
-- failure before any certificate exists (first issuance refused by the CA) has none;
-- name always says which declaration the event is about.
CREATE TABLE CertAudit (
    id        BIGSERIAL PRIMARY KEY,
    cert_id   UUID REFERENCES Certificate(id),
    action    TEXT NOT NULL,                           -- issued, renewed, revoked, distributed, ...
    actor     TEXT NOT NULL,                           -- git:<sha> <email> | user:<login> | automation:renewal
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    name      TEXT COLLATE "C" NOT NULL,
    detail    JSONB NOT NULL DEFAULT '{}',             -- never a secret
    CONSTRAINT chk_audit_action CHECK (
        action IN ('issued','renewed','revoked','distributed','verified','retired','failed')
    )
);
CREATE INDEX idx_audit_name ON CertAudit(name, id);
CREATE INDEX idx_audit_cert ON CertAudit(cert_id);

CREATE FUNCTION certaudit_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'CertAudit is append-only: % is not allowed', TG_OP
        USING HINT = 'audit events can only be inserted; record a new event instead';
END;
$$;
CREATE TRIGGER certaudit_no_update BEFORE UPDATE ON CertAudit
    FOR EACH ROW EXECUTE FUNCTION certaudit_reject_change();
CREATE TRIGGER certaudit_no_delete BEFORE DELETE ON CertAudit
    FOR EACH ROW EXECUTE FUNCTION certaudit_reject_change();
CREATE TRIGGER certaudit_no_truncate BEFORE TRUNCATE ON CertAudit
    FOR EACH STATEMENT EXECUTE FUNCTION certaudit_reject_change();
-- ENABLE ALWAYS: the triggers also fire under session_replication_role = replica,
-- which would otherwise let a superuser skip them without any DDL.
ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_update;
ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_delete;
ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_truncate;

-- What was pushed to each target, per certificate name (certificate × target).
-- Keyed by name so a rotation overwrites the old certificate's row for the target.
-- No Target table: targets are declared in the desired state, and target_fingerprint
-- records the declaration a push was made under.
CREATE TABLE Distribution (
    cert_name          TEXT COLLATE "C" NOT NULL,
    target             TEXT COLLATE "C" NOT NULL,
    cert_id            UUID NOT NULL REFERENCES Certificate(id),
    fingerprint        TEXT NOT NULL,                  -- of the certificate pushed
    pushed_at          TIMESTAMPTZ,
    verified_at        TIMESTAMPTZ,                    -- only after a handshake proved the target serves it
    last_error         TEXT,                           -- never a secret
    target_fingerprint TEXT,
    PRIMARY KEY (cert_name, target)
);
CREATE INDEX idx_distribution_cert ON Distribution(cert_id);

-- ACME accounts, one per directory; key_ref is the KMS envelope of the account key.
CREATE TABLE AcmeAccount (
    id            BIGSERIAL PRIMARY KEY,
    directory_url TEXT NOT NULL UNIQUE,
    key_ref       TEXT NOT NULL,
    account_url   TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ACME orders in flight, so that a resumed apply continues the order instead of placing another.
CREATE TABLE AcmeOrder (
    id              BIGSERIAL PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    name            TEXT COLLATE "C" NOT NULL,
    order_url       TEXT,
    state           TEXT NOT NULL,
    key_ref         TEXT,                              -- envelope of the certificate key made for this order
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per apply.
CREATE TABLE ApplyRun (
    id          BIGSERIAL PRIMARY KEY,
    git_commit  TEXT,
    plan_digest TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome     TEXT                                   -- NULL while running (or killed)
);

-- The step journal: written before (started) and after (done | failed) every external step.
CREATE TABLE ApplyStep (
    id              BIGSERIAL PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES ApplyRun(id),
    idempotency_key TEXT NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    step            TEXT NOT NULL,
    state           TEXT NOT NULL,
    detail          JSONB NOT NULL DEFAULT '{}',       -- never a secret
    at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT chk_step_state CHECK (state IN ('started','done','failed'))
);
CREATE INDEX idx_step_key ON ApplyStep(idempotency_key, id);

-- Lineage (fixed at creation) and serial (bumped by applies) for stale-plan detection.
CREATE TABLE StateMeta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE,
    lineage   UUID NOT NULL DEFAULT gen_random_uuid(),
    serial    BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT chk_statemeta_singleton CHECK (singleton),
    CONSTRAINT chk_statemeta_serial CHECK (serial >= 0)
);
INSERT INTO StateMeta DEFAULT VALUES;

-- The local CA of each local_ca issuer: created once, first writer wins.
CREATE TABLE LocalCa (
    issuer_name TEXT PRIMARY KEY,
    cert_pem    TEXT NOT NULL,
    key_ref     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per-name backoff after failed issuances (cleared by the next success).
CREATE TABLE IssuanceBackoff (
    name            TEXT COLLATE "C" PRIMARY KEY,
    failures        INTEGER NOT NULL DEFAULT 1,
    last_failure_at TIMESTAMPTZ NOT NULL,
    until           TIMESTAMPTZ NOT NULL,
    CONSTRAINT chk_backoff_failures CHECK (failures > 0)
);

-- ==== 0002_audit_key_accessed ====

-- certreconcile migration 0002: every decrypt of a private key is audited (key_accessed).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed')
);

-- ==== 0003_audit_key_rewrapped ====

-- certreconcile migration 0003: `kms rewrap` audits every data key it moves to another KMS (key_rewrapped).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped')
);

-- ==== 0004_acme ====

-- certreconcile migration 0004: ACME issuance (orders bound to their key, ARI windows, budgets).

-- The Certificate id an order's key is sealed for (its KMS context), and the directory it
-- was placed with (per-account order budgets). No foreign key: the Certificate row is
-- inserted only when the order completes.
ALTER TABLE AcmeOrder ADD COLUMN cert_id UUID;
ALTER TABLE AcmeOrder ADD COLUMN directory_url TEXT;
CREATE INDEX idx_acmeorder_directory_created ON AcmeOrder(directory_url, created_at);

-- The ARI certificate id (RFC 9773 `replaces`) the order of this certificate named:
-- set only for renewals the CA accepted as such (exempt from Let's Encrypt's limits).
ALTER TABLE Certificate ADD COLUMN ari_replaces TEXT;

-- The renewal window an ACME CA suggested for a certificate (RFC 9773), and when to ask again.
CREATE TABLE AcmeRenewalInfo (
    cert_id         UUID PRIMARY KEY REFERENCES Certificate(id),
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    explanation_url TEXT,
    retry_after     TIMESTAMPTZ NOT NULL,
    fetched_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT chk_ari_window CHECK (window_end >= window_start)
);

-- The declaration a backoff was earned under: a changed declaration resets it.
ALTER TABLE IssuanceBackoff ADD COLUMN declaration_digest TEXT;

-- AcmeOrder.key_ref was never written: an order's key is journalled (sealed) in ApplyStep
-- (`key-generated`), which `kms rewrap` already walks. One copy of a secret, not two.
ALTER TABLE AcmeOrder DROP COLUMN key_ref;

-- ==== 0005_issuance_history ====

-- certreconcile migration 0005: the recent-issuance history read by every plan (Let's Encrypt budgets).
--
-- load_actual reads the certificates created in the last 7 days (joined to their ACME order).
-- Without this index that is a sequential scan of every certificate ever issued (300k rows:
-- ~140 ms); with it, an index range scan of the week's rows (a few ms).
CREATE INDEX idx_cert_created_at ON Certificate(created_at);

-- ==== 0006_distribution_verified_fingerprint ====

-- certreconcile migration 0006: what each target was last PROVEN to serve (by handshake or
-- read-back), kept apart from what was last pushed to it. A push whose verification failed
-- leaves the previous verified fingerprint in place, so status and drift can say both.
ALTER TABLE Distribution ADD COLUMN verified_fingerprint TEXT;
UPDATE Distribution SET verified_fingerprint = fingerprint WHERE verified_at IS NOT NULL;

-- ==== 0007_audit_chain ====

-- certreconcile migration 0007: tamper evidence for CertAudit (a hash chain).
--
-- Every row gets a position in one total order (seq: 1, 2, 3, ... without gaps), the hash
-- of the row before it (prev_hash; 64 zeros before seq 1) and its own hash (row_hash).
-- `certreconcile audit verify` recomputes every hash (in Python, from the columns) and
-- reports the first row changed, deleted or reordered; against a head exported earlier
-- (`audit verify --export-head FILE`, then `--head FILE`) it also detects a truncated or
-- wholly rewritten tail.
--
-- row_hash = lower-case hex of SHA-256 over the UTF-8 bytes of ten fields, in this order:
--   'certaudit-v1', seq, id, cert_id, name, action, actor, timestamp, detail, prev_hash
-- each encoded as <number of UTF-8 bytes in decimal> ':' <the bytes>, and SQL NULL as '~'
-- (only cert_id may be NULL). Field texts: seq and id in decimal; cert_id the canonical
-- lower-case UUID text; timestamp the microseconds since 1970-01-01T00:00:00Z in decimal
-- (an integer, whatever the session's TimeZone or DateStyle); detail the jsonb text form
-- (detail::text, canonical: keys sorted, ", " and ": " separators); prev_hash its hex.
-- Python twin: certreconcile.audit.chain.row_hash. Never change this encoding in place:
-- a new column in the hash means a new tag ('certaudit-v2') for the rows after it.
--
-- The hash is computed here, by a BEFORE INSERT trigger, so every writer (apply, run,
-- manual commands, any role, psql) produces it identically. The trigger locks the one row
-- of CertAuditHead, so concurrent inserters are serialized: each chains onto the row the
-- previous one committed (a rolled-back insert also rolls back its seq: no gap). seq is
-- therefore also the commit order. The lock is held until commit, so keep audit inserts
-- at the end of short transactions.

ALTER TABLE CertAudit ADD COLUMN seq BIGINT;
ALTER TABLE CertAudit ADD COLUMN prev_hash TEXT;
ALTER TABLE CertAudit ADD COLUMN row_hash TEXT;

-- The hash of one row (see the encoding above). Used by the trigger and by this migration.
CREATE FUNCTION certaudit_row_hash(
    seq BIGINT, id BIGINT, cert_id UUID, name TEXT, action TEXT, actor TEXT,
    at TIMESTAMPTZ, detail JSONB, prev_hash TEXT
) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog
RETURN encode(sha256(convert_to(
    (SELECT string_agg(
                CASE WHEN f IS NULL THEN '~' ELSE octet_length(convert_to(f, 'UTF8'))::text || ':' || f END,
                '' ORDER BY n)
     FROM unnest(ARRAY[
            'certaudit-v1', seq::text, id::text, cert_id::text, name, action, actor,
            (extract(epoch FROM at) * 1000000)::numeric(30, 0)::text, detail::text, prev_hash
          ]) WITH ORDINALITY AS fields(f, n)),
    'UTF8')), 'hex');

-- The end of the chain: one row, moved by the trigger only (its own trigger refuses
-- anything else). Reading it first lets `audit verify` notice a deleted last row.
CREATE TABLE CertAuditHead (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE,
    seq       BIGINT NOT NULL,
    row_hash  TEXT NOT NULL,
    CONSTRAINT chk_certaudithead_singleton CHECK (singleton)
);

-- Existing rows are chained in id order (their insertion order).
ALTER TABLE CertAudit DISABLE TRIGGER certaudit_no_update;
DO $$
DECLARE
    r RECORD;
    position BIGINT := 0;
    previous TEXT := repeat('0', 64);
BEGIN
    FOR r IN SELECT * FROM CertAudit ORDER BY id LOOP
        position := position + 1;
        UPDATE CertAudit SET seq = position, prev_hash = previous,
               row_hash = certaudit_row_hash(position, r.id, r.cert_id, r.name, r.action, r.actor,
                                             r.timestamp, r.detail, previous)
         WHERE id = r.id
        RETURNING row_hash INTO previous;
    END LOOP;
    INSERT INTO CertAuditHead (seq, row_hash) VALUES (position, previous);
END;
$$;
ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_no_update;

ALTER TABLE CertAudit ALTER COLUMN seq SET NOT NULL;
ALTER TABLE CertAudit ALTER COLUMN prev_hash SET NOT NULL;
ALTER TABLE CertAudit ALTER COLUMN row_hash SET NOT NULL;
ALTER TABLE CertAudit ADD CONSTRAINT uq_audit_seq UNIQUE (seq);  -- the chain order; verify pages by it

-- SECURITY DEFINER: the application role may INSERT into CertAudit and nothing into
-- CertAuditHead; the trigger moves the head as the schema owner.
CREATE FUNCTION certaudit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp  -- the schema lives in public; pg_temp last: no shadowing
AS $$
DECLARE
    head RECORD;
BEGIN
    SELECT seq, row_hash INTO head FROM CertAuditHead FOR UPDATE;  -- serializes inserters until commit
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the audit chain head (CertAuditHead) is missing'
            USING HINT = 'the audit trail was tampered with; run `certreconcile audit verify`';
    END IF;
    NEW.seq := head.seq + 1;
    NEW.prev_hash := head.row_hash;
    NEW.row_hash := certaudit_row_hash(NEW.seq, NEW.id, NEW.cert_id, NEW.name, NEW.action, NEW.actor,
                                       NEW.timestamp, NEW.detail, NEW.prev_hash);
    UPDATE CertAuditHead SET seq = NEW.seq, row_hash = NEW.row_hash;
    RETURN NEW;
END;
$$;
CREATE TRIGGER certaudit_chain BEFORE INSERT ON CertAudit
    FOR EACH ROW EXECUTE FUNCTION certaudit_chain();
ALTER TABLE CertAudit ENABLE ALWAYS TRIGGER certaudit_chain;

-- CertAuditHead changes only from inside certaudit_chain (trigger depth 2).
CREATE FUNCTION certaudit_head_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'CertAuditHead is moved by the audit chain only: % is not allowed', TG_OP
        USING HINT = 'insert an audit event instead; the chain head follows it';
END;
$$;
CREATE TRIGGER certaudit_head_guard BEFORE INSERT OR UPDATE OR DELETE ON CertAuditHead
    FOR EACH ROW EXECUTE FUNCTION certaudit_head_guard();
CREATE TRIGGER certaudit_head_no_truncate BEFORE TRUNCATE ON CertAuditHead
    FOR EACH STATEMENT EXECUTE FUNCTION certaudit_head_guard();
ALTER TABLE CertAuditHead ENABLE ALWAYS TRIGGER certaudit_head_guard;
ALTER TABLE CertAuditHead ENABLE ALWAYS TRIGGER certaudit_head_no_truncate;

-- ==== 0008_least_privilege ====

-- certreconcile migration 0008: what `plan` reads, readable without the sealed private keys.
--
-- `certreconcile db roles` gives the plan role SELECT on every column except the key
-- envelopes (Certificate.key_ref, LocalCa.key_ref, AcmeAccount.key_ref, ApplyStep.detail).
-- Two things plan needs were computed from those columns; they now come without them.

-- Whether a key envelope is stored (plan's `key-missing` check), kept by PostgreSQL itself.
ALTER TABLE Certificate ADD COLUMN has_key BOOLEAN GENERATED ALWAYS AS (key_ref <> '') STORED;

-- Which KMS and master key sealed the stored keys (plan's KMS-drift warning): counts only,
-- never an envelope. SECURITY DEFINER: it reads the key columns with its owner's rights,
-- so a role that may not read them can still call it. Its search_path is pinned below.
CREATE FUNCTION certreconcile_key_ref_usage() RETURNS TABLE (kms TEXT, key_id TEXT, keys BIGINT)
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT kms, key_id, count(*) FROM (
        SELECT key_ref::jsonb->>'kms' AS kms, key_ref::jsonb->>'key_id' AS key_id FROM Certificate
        WHERE key_ref <> ''
        UNION ALL SELECT key_ref::jsonb->>'kms', key_ref::jsonb->>'key_id' FROM LocalCa
        UNION ALL SELECT key_ref::jsonb->>'kms', key_ref::jsonb->>'key_id' FROM AcmeAccount
        UNION ALL SELECT (detail->>'key_ref')::jsonb->>'kms', (detail->>'key_ref')::jsonb->>'key_id'
        FROM ApplyStep WHERE step = 'key-generated' AND detail ? 'key_ref'
    ) used GROUP BY kms, key_id
$$;
-- The schema the tables were just created in, and nothing a caller could put first.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION certreconcile_key_ref_usage() SET search_path = pg_catalog, %I',
                   current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION certreconcile_key_ref_usage() FROM PUBLIC;

-- ==== 0009_audit_key_discarded ====

-- certreconcile migration 0009: apply audits a journalled key it discards because it can never be
-- opened (sealed under another master key, refused, damaged) before it makes a new one (key_discarded).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded')
);

-- ==== 0010_certificate_origin ====

-- certreconcile migration 0010: who owns a certificate. 'git': declared in the desired state (an apply
-- retires or revokes it when its declaration is removed); 'api': issued through the CertificateManager
-- facade (an apply of declarations that do not name it leaves it alone).
ALTER TABLE Certificate ADD COLUMN origin TEXT NOT NULL DEFAULT 'git';
ALTER TABLE Certificate ADD CONSTRAINT chk_cert_origin CHECK (origin IN ('git','api'));

-- ==== 0011_git_followed_commit ====

-- certreconcile migration 0011: the git commit `run --git` follows (design §9), shared by every replica.
-- git_source names what is followed (the repository URL without credentials, the branch, the path);
-- git_commit is the commit whose declarations apply. Moved by compare-and-set, forwards only.
ALTER TABLE StateMeta
    ADD COLUMN git_source TEXT,
    ADD COLUMN git_commit TEXT,
    ADD CONSTRAINT chk_statemeta_git CHECK ((git_source IS NULL) = (git_commit IS NULL)),
    ADD CONSTRAINT chk_statemeta_git_commit CHECK (git_commit ~ '^[0-9a-f]{40}([0-9a-f]{24})?$');

-- ==== 0012_audit_lifecycle ====

-- certreconcile migration 0012: run and apply move certificates along the lifecycle as time passes,
-- each move audited: `expiring_soon` (active → expiring_soon: the renewal fell due) and `expired`
-- (active/expiring_soon → expired: not_after passed and nothing replaced it).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded','expiring_soon','expired')
);

-- ==== 0013_fleet ====

-- certreconcile migration 0013: the fleet (design.md section 9): the fleet CA and the enrolled agents.
--
-- FleetCa holds one row: the CA that signs the agents' and the applier's certificates. Its private
-- key is a KMS envelope (key_ref), like LocalCa's; `db roles` hides key_ref from the plan role.
CREATE TABLE FleetCa (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CONSTRAINT chk_fleetca_one CHECK (id),
    cert_pem    TEXT NOT NULL,
    key_ref     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per enrolled agent: its current certificate (public), and when it last answered the applier.
CREATE TABLE FleetAgent (
    name          TEXT COLLATE "C" PRIMARY KEY,
    serial        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    cert_pem      TEXT NOT NULL,
    not_before    TIMESTAMPTZ NOT NULL,
    not_after     TIMESTAMPTZ NOT NULL,
    enrolled_at   TIMESTAMPTZ NOT NULL,
    renewed_at    TIMESTAMPTZ,
    last_seen_at  TIMESTAMPTZ,
    last_error    TEXT,
    CONSTRAINT chk_fleetagent_validity CHECK (not_before < not_after)
);

-- The fleet's audit events: the CA made, an agent enrolled, an agent's own certificate renewed.
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded','expiring_soon','expired','fleet_ca_created','agent_enrolled',
               'agent_renewed')
);

-- The KMS-drift counts cover the fleet CA's key too (same definition as 0008 otherwise).
CREATE OR REPLACE FUNCTION certreconcile_key_ref_usage() RETURNS TABLE (kms TEXT, key_id TEXT, keys BIGINT)
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT kms, key_id, count(*) FROM (
        SELECT key_ref::jsonb->>'kms' AS kms, key_ref::jsonb->>'key_id' AS key_id FROM Certificate
        WHERE key_ref <> ''
        UNION ALL SELECT key_ref::jsonb->>'kms', key_ref::jsonb->>'key_id' FROM LocalCa
        UNION ALL SELECT key_ref::jsonb->>'kms', key_ref::jsonb->>'key_id' FROM AcmeAccount
        UNION ALL SELECT key_ref::jsonb->>'kms', key_ref::jsonb->>'key_id' FROM FleetCa
        UNION ALL SELECT (detail->>'key_ref')::jsonb->>'kms', (detail->>'key_ref')::jsonb->>'key_id'
        FROM ApplyStep WHERE step = 'key-generated' AND detail ? 'key_ref'
    ) used GROUP BY kms, key_id
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION certreconcile_key_ref_usage() SET search_path = pg_catalog, %I',
                   current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION certreconcile_key_ref_usage() FROM PUBLIC;

-- ==== 0014_notification_outbox ====

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

-- ==== 0015_certificate_imported ====

-- certreconcile migration 0015: `certreconcile import` adopts certificates that exist already (issued by
-- another tool) without reissuing them: origin 'imported' (owned like 'git': declared, renewed on schedule,
-- retired or revoked when the declaration goes) and the audit action 'imported'.
ALTER TABLE Certificate DROP CONSTRAINT chk_cert_origin;
ALTER TABLE Certificate ADD CONSTRAINT chk_cert_origin CHECK (origin IN ('git','api','imported'));
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded','expiring_soon','expired','fleet_ca_created','agent_enrolled',
               'agent_renewed','notified','imported')
);

-- ==== 0016_acme_order_cert_index ====

-- certreconcile migration 0016: the recent issuances (Let's Encrypt's budgets, read with every plan) join each
-- certificate of the window to its order by cert_id. Without an index the join scanned every order once per
-- certificate: 0.7 s at 10,000 certificates a month after their onboarding (532 recent issuances × 11,638
-- orders), growing with both; an index lookup each instead.
CREATE INDEX idx_acmeorder_cert ON AcmeOrder(cert_id);

-- ==== 0017_renewal_info_fillfactor ====

-- certreconcile migration 0017: an ARI refresh rewrites every answer's Retry-After (Let's Encrypt asks for 6
-- hours, so a fleet's every row each look: 10,000 rows in one UPDATE). With full pages each new row version
-- goes to another page and the primary key gets an entry for it; with room left on each page the version
-- stays beside the old one and no index is touched (a heap-only update): 20 ms instead of 40-55 ms per
-- 10,000 rows, measured on the embedded server. Pages already full get their room back as they are vacuumed.
ALTER TABLE AcmeRenewalInfo SET (fillfactor = 50);

-- ==== 0018_current_row_covering_index ====

-- certreconcile migration 0018: the current-row index carries every column the current-row queries read
-- (load_actual, current_certificate), so they are answered from the index (an index-only scan) instead of
-- the table. A Certificate row is about 1.8 KB (PEMs and the key envelope, just under PostgreSQL's 2 KB
-- threshold for moving long values out of line), and superseded rows are never deleted: every cycle of
-- `run` read the whole history to find the 10,000 current rows. In the simulated year (bench/simulate.py,
-- 10,000 certificates) that scan took 22 ms at day 60 (19,500 rows) and 59 ms at day 110 (41,000 rows,
-- 100 MB), growing with every renewal; from this index the query reads 1,400 pages instead of 12,900 there,
-- and their number follows the declared certificates, not the history.
DROP INDEX idx_cert_name_current;
CREATE INDEX idx_cert_name_current
    ON Certificate(name, (status IN ('issued','active','expiring_soon')) DESC, created_at DESC, not_before DESC, id DESC)
    INCLUDE (domain, san_domains, issuer, key_type, serial_number, not_after, status, fingerprint, on_delete,
             has_key, issuer_fingerprint, origin)
    WHERE retired_at IS NULL AND status <> 'superseded';

-- ==== 0019_audit_hash_plpgsql ====

-- certreconcile migration 0019: the audit chain's row hash, computed the same way, faster.
--
-- certaudit_row_hash (migration 0007) was a SQL function whose body aggregates the fields with
-- unnest and string_agg. Called from the chain trigger (PL/pgSQL), a SQL function is not inlined:
-- every audit row paid for setting up that query, about half of the server's time per INSERT into
-- CertAudit (0.25 of 0.37 ms in the simulated year of bench/simulate.py, where CertAudit took 30 % of
-- the database's time). This body builds the same string with a loop and hashes it: the encoding is
-- unchanged (migration 0007 describes it; certreconcile.audit.chain.row_hash is its Python twin), so
-- the rows already chained verify as before and `audit verify` needs no change.
CREATE OR REPLACE FUNCTION certaudit_row_hash(
    seq BIGINT, id BIGINT, cert_id UUID, name TEXT, action TEXT, actor TEXT,
    at TIMESTAMPTZ, detail JSONB, prev_hash TEXT
) RETURNS TEXT
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
DECLARE
    encoded TEXT := '12:certaudit-v1';  -- the tag, encoded as every field below
    field TEXT;
BEGIN
    FOREACH field IN ARRAY ARRAY[
        seq::text, id::text, cert_id::text, name, action, actor,
        (extract(epoch FROM at) * 1000000)::numeric(30, 0)::text, detail::text, prev_hash
    ] LOOP
        encoded := encoded || CASE WHEN field IS NULL THEN '~'
                                   ELSE octet_length(convert_to(field, 'UTF8'))::text || ':' || field END;
    END LOOP;
    RETURN encode(sha256(convert_to(encoded, 'UTF8')), 'hex');
END;
$$;

-- ==== 0020_renewal_info_of_superseded ====

-- certreconcile migration 0020: a certificate's renewal info (ARI) is deleted when it is superseded.
--
-- Nobody asks the CA about a superseded certificate again, and nothing reads its stored window, but its
-- AcmeRenewalInfo row stayed: the table grew by one row per renewal. The current-row query (load_actual,
-- every `plan` and every cycle of `run`) joins the table and PostgreSQL hashes all of it: in the simulated
-- year of bench/simulate.py (10,000 certificates) it held 83,658 rows at day 250, of which 9,941 were of
-- live certificates, and the query took 60 ms on the server against 30 ms with those rows alone.
-- A trigger, as the schema owner (SECURITY DEFINER, as the audit chain's): every path to 'superseded' is
-- covered, and the apply role needs no DELETE on the table.
CREATE FUNCTION acmerenewalinfo_drop_superseded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp  -- the schema lives in public; pg_temp last: no shadowing
AS $$
BEGIN
    DELETE FROM AcmeRenewalInfo WHERE cert_id = NEW.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER certificate_superseded_drops_renewal_info AFTER UPDATE OF status ON Certificate
    FOR EACH ROW WHEN (NEW.status = 'superseded' AND OLD.status <> 'superseded')
    EXECUTE FUNCTION acmerenewalinfo_drop_superseded();

DELETE FROM AcmeRenewalInfo a USING Certificate c WHERE c.id = a.cert_id AND c.status = 'superseded';

-- ==== bookkeeping: the migrations this schema contains ====

INSERT INTO SchemaMigration (version, name) VALUES (1, '0001_initial');
INSERT INTO SchemaMigration (version, name) VALUES (2, '0002_audit_key_accessed');
INSERT INTO SchemaMigration (version, name) VALUES (3, '0003_audit_key_rewrapped');
INSERT INTO SchemaMigration (version, name) VALUES (4, '0004_acme');
INSERT INTO SchemaMigration (version, name) VALUES (5, '0005_issuance_history');
INSERT INTO SchemaMigration (version, name) VALUES (6, '0006_distribution_verified_fingerprint');
INSERT INTO SchemaMigration (version, name) VALUES (7, '0007_audit_chain');
INSERT INTO SchemaMigration (version, name) VALUES (8, '0008_least_privilege');
INSERT INTO SchemaMigration (version, name) VALUES (9, '0009_audit_key_discarded');
INSERT INTO SchemaMigration (version, name) VALUES (10, '0010_certificate_origin');
INSERT INTO SchemaMigration (version, name) VALUES (11, '0011_git_followed_commit');
INSERT INTO SchemaMigration (version, name) VALUES (12, '0012_audit_lifecycle');
INSERT INTO SchemaMigration (version, name) VALUES (13, '0013_fleet');
INSERT INTO SchemaMigration (version, name) VALUES (14, '0014_notification_outbox');
INSERT INTO SchemaMigration (version, name) VALUES (15, '0015_certificate_imported');
INSERT INTO SchemaMigration (version, name) VALUES (16, '0016_acme_order_cert_index');
INSERT INTO SchemaMigration (version, name) VALUES (17, '0017_renewal_info_fillfactor');
INSERT INTO SchemaMigration (version, name) VALUES (18, '0018_current_row_covering_index');
INSERT INTO SchemaMigration (version, name) VALUES (19, '0019_audit_hash_plpgsql');
INSERT INTO SchemaMigration (version, name) VALUES (20, '0020_renewal_info_of_superseded');

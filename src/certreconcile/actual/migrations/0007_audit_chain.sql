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

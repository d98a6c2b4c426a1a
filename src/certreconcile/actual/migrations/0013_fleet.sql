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

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

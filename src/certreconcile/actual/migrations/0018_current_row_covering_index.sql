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

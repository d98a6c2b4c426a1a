-- certreconcile migration 0012: run and apply move certificates along the lifecycle as time passes,
-- each move audited: `expiring_soon` (active → expiring_soon: the renewal fell due) and `expired`
-- (active/expiring_soon → expired: not_after passed and nothing replaced it).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded','expiring_soon','expired')
);

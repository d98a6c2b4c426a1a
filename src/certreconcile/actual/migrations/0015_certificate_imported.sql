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

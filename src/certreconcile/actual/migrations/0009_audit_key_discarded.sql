-- certreconcile migration 0009: apply audits a journalled key it discards because it can never be
-- opened (sealed under another master key, refused, damaged) before it makes a new one (key_discarded).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped','key_discarded')
);

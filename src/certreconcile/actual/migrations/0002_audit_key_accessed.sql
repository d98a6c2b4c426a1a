-- certreconcile migration 0002: every decrypt of a private key is audited (key_accessed).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed')
);

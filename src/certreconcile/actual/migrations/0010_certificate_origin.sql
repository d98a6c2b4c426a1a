-- certreconcile migration 0010: who owns a certificate. 'git': declared in the desired state (an apply
-- retires or revokes it when its declaration is removed); 'api': issued through the CertificateManager
-- facade (an apply of declarations that do not name it leaves it alone).
ALTER TABLE Certificate ADD COLUMN origin TEXT NOT NULL DEFAULT 'git';
ALTER TABLE Certificate ADD CONSTRAINT chk_cert_origin CHECK (origin IN ('git','api'));

-- certreconcile migration 0006: what each target was last PROVEN to serve (by handshake or
-- read-back), kept apart from what was last pushed to it. A push whose verification failed
-- leaves the previous verified fingerprint in place, so status and drift can say both.
ALTER TABLE Distribution ADD COLUMN verified_fingerprint TEXT;
UPDATE Distribution SET verified_fingerprint = fingerprint WHERE verified_at IS NOT NULL;

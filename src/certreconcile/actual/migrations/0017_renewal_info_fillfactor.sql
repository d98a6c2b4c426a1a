-- certreconcile migration 0017: an ARI refresh rewrites every answer's Retry-After (Let's Encrypt asks for 6
-- hours, so a fleet's every row each look: 10,000 rows in one UPDATE). With full pages each new row version
-- goes to another page and the primary key gets an entry for it; with room left on each page the version
-- stays beside the old one and no index is touched (a heap-only update): 20 ms instead of 40-55 ms per
-- 10,000 rows, measured on the embedded server. Pages already full get their room back as they are vacuumed.
ALTER TABLE AcmeRenewalInfo SET (fillfactor = 50);

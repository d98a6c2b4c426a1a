-- certreconcile migration 0011: the git commit `run --git` follows (design §9), shared by every replica.
-- git_source names what is followed (the repository URL without credentials, the branch, the path);
-- git_commit is the commit whose declarations apply. Moved by compare-and-set, forwards only.
ALTER TABLE StateMeta
    ADD COLUMN git_source TEXT,
    ADD COLUMN git_commit TEXT,
    ADD CONSTRAINT chk_statemeta_git CHECK ((git_source IS NULL) = (git_commit IS NULL)),
    ADD CONSTRAINT chk_statemeta_git_commit CHECK (git_commit ~ '^[0-9a-f]{40}([0-9a-f]{24})?$');

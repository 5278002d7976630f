-- Signed checkpoints of each tenant's audit chain head. The signing key is not in the database,
-- so a database writer can delete checkpoints (verification then proves less, and says so) but
-- cannot make one: a rewritten, recomputed or shortened chain no longer matches the last one.
CREATE TABLE audit_checkpoints (
    tenant    TEXT   NOT NULL,
    seq       INTEGER NOT NULL,
    hash      TEXT   NOT NULL,
    time      INTEGER NOT NULL,
    key_id    TEXT   NOT NULL,
    signature TEXT   NOT NULL,
    PRIMARY KEY (tenant, key_id, seq)
);

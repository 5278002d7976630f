-- Portal: read-only impersonation bound to a web session, and one-time password reset tokens.

-- The user an admin is viewing the portal as (read-only); NULL when not impersonating.
ALTER TABLE web_sessions ADD COLUMN impersonating BLOB;

CREATE TABLE password_resets (
    tenant     TEXT    NOT NULL,
    -- SHA-256 of the token handed out; the token itself is never stored.
    token_hash TEXT    NOT NULL,
    user_id    BLOB    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (tenant, token_hash),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX password_resets_user ON password_resets (tenant, user_id);

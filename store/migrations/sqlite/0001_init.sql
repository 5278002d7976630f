-- CallVault vault schema, SQLite (mirrors migrations/postgres). Every row carries its tenant (a namespace); every key and
-- index is led by it. Times are INTEGER microseconds since the Unix epoch (the SQLite schema uses
-- the same representation, so the Rust layer is identical on both).

CREATE TABLE users (
    tenant               TEXT    NOT NULL,
    id                   BLOB    NOT NULL,
    username             TEXT    NOT NULL,
    display_name         TEXT    NOT NULL DEFAULT '',
    email                TEXT    NOT NULL DEFAULT '',
    password_hash        TEXT,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins        INTEGER  NOT NULL DEFAULT 0,
    locked_until         INTEGER,
    legal_hold           BOOLEAN NOT NULL DEFAULT FALSE,
    time_zone            TEXT    NOT NULL DEFAULT 'UTC',
    source               TEXT    NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'oidc', 'scim')),
    external_id          TEXT,
    created_at           INTEGER  NOT NULL,
    updated_at           INTEGER  NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, username)
);
CREATE UNIQUE INDEX users_external ON users (tenant, source, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE groups (
    tenant      TEXT   NOT NULL,
    id          BLOB   NOT NULL,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    external_id TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE memberships (
    tenant   TEXT NOT NULL,
    group_id BLOB NOT NULL,
    user_id  BLOB NOT NULL,
    PRIMARY KEY (tenant, group_id, user_id),
    FOREIGN KEY (tenant, group_id) REFERENCES groups (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX memberships_user ON memberships (tenant, user_id);

-- Numbers that associate calls with users; a number belongs to at most one user per tenant.
CREATE TABLE extensions (
    tenant  TEXT NOT NULL,
    number  TEXT NOT NULL,
    user_id BLOB NOT NULL,
    PRIMARY KEY (tenant, number),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX extensions_user ON extensions (tenant, user_id);

CREATE TABLE recordings (
    tenant               TEXT    NOT NULL,
    id                   BLOB    NOT NULL,
    call_id              TEXT    NOT NULL,
    sip_call_id          TEXT    NOT NULL DEFAULT '',
    session_id           TEXT    NOT NULL DEFAULT '',
    segment              INTEGER  NOT NULL DEFAULT 0,
    start_time           INTEGER  NOT NULL,
    answer_time          INTEGER,
    end_time             INTEGER,
    duration_ms          INTEGER  NOT NULL DEFAULT 0,
    wait_ms              INTEGER,
    direction            TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal', 'conference')),
    call_type            TEXT    NOT NULL DEFAULT 'unknown',
    calling_number       TEXT    NOT NULL DEFAULT '',
    calling_name         TEXT    NOT NULL DEFAULT '',
    calling_norm         TEXT    NOT NULL DEFAULT ' ',
    called_number        TEXT    NOT NULL DEFAULT '',
    called_name          TEXT    NOT NULL DEFAULT '',
    called_norm          TEXT    NOT NULL DEFAULT ' ',
    answering_number     TEXT    NOT NULL DEFAULT '',
    answering_name       TEXT    NOT NULL DEFAULT '',
    answering_norm       TEXT    NOT NULL DEFAULT ' ',
    on_behalf_of         TEXT    NOT NULL DEFAULT '',
    transferred_by       TEXT    NOT NULL DEFAULT '',
    transferred_to       TEXT    NOT NULL DEFAULT '',
    queue_name           TEXT    NOT NULL DEFAULT '',
    participants         TEXT    NOT NULL DEFAULT '[]',
    participants_norm    TEXT    NOT NULL DEFAULT ' ',
    release_cause        TEXT    CHECK (release_cause IN ('normal', 'failure', 'missed', 'abandoned', 'transferred')),
    owner_user_id        BLOB,
    owner_item           TEXT    NOT NULL DEFAULT '',
    agents               TEXT    NOT NULL DEFAULT '[]',
    skills               TEXT    NOT NULL DEFAULT '[]',
    profile              TEXT    NOT NULL DEFAULT '',
    storage_target       TEXT    NOT NULL DEFAULT '',
    object_key           TEXT,
    size_bytes           INTEGER,
    codec                TEXT    NOT NULL DEFAULT '',
    channels             INTEGER  NOT NULL DEFAULT 0,
    sha256               TEXT,
    metadata_digest      TEXT,
    signature            TEXT,
    key_id               TEXT,
    expires_at           INTEGER,
    legal_hold           BOOLEAN NOT NULL DEFAULT FALSE,
    delete_mode          TEXT    CHECK (delete_mode IN ('media_only', 'all')),
    delete_requested_by  TEXT,
    delete_authorised_by TEXT,
    delete_note          TEXT,
    delete_requested_at  INTEGER,
    deleted_at           INTEGER,
    status               TEXT    NOT NULL CHECK (status IN ('recording', 'pending', 'available', 'incomplete', 'deleted')),
    raw_metadata         TEXT,
    search_text          TEXT    NOT NULL DEFAULT '',
    created_at           INTEGER  NOT NULL,
    updated_at           INTEGER  NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- The default listing and every date-range search.
CREATE INDEX recordings_start ON recordings (tenant, start_time, id);
-- Scope Own / a user filter.
CREATE INDEX recordings_owner_start ON recordings (tenant, owner_user_id, start_time, id);
CREATE INDEX recordings_active ON recordings (tenant, start_time) WHERE status = 'recording';
CREATE INDEX recordings_expiry ON recordings (tenant, expires_at) WHERE status <> 'deleted';
CREATE INDEX recordings_call ON recordings (tenant, call_id);

-- Groups a recording belongs to, captured at call time (the owner's groups then).
CREATE TABLE recording_groups (
    tenant       TEXT NOT NULL,
    recording_id BLOB NOT NULL,
    group_id     BLOB NOT NULL,
    PRIMARY KEY (tenant, recording_id, group_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX recording_groups_group ON recording_groups (tenant, group_id, recording_id);

CREATE TABLE recording_copies (
    tenant       TEXT   NOT NULL,
    recording_id BLOB   NOT NULL,
    connector    TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    object_key   TEXT   NOT NULL,
    sha256       TEXT   NOT NULL,
    archived_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, recording_id, connector),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);

CREATE TABLE tags (
    tenant     TEXT   NOT NULL,
    id         BLOB   NOT NULL,
    name       TEXT   NOT NULL,
    color      TEXT   NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE recording_tags (
    tenant       TEXT NOT NULL,
    recording_id BLOB NOT NULL,
    tag_id       BLOB NOT NULL,
    PRIMARY KEY (tenant, recording_id, tag_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, tag_id) REFERENCES tags (tenant, id) ON DELETE CASCADE
);
CREATE INDEX recording_tags_tag ON recording_tags (tenant, tag_id, recording_id);

CREATE TABLE notes (
    tenant         TEXT   NOT NULL,
    id             BLOB   NOT NULL,
    recording_id   BLOB   NOT NULL,
    author_user_id BLOB,
    author_name    TEXT   NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    body           TEXT   NOT NULL,
    -- " word word " lower-cased, punctuation folded to spaces: whole-word search is LIKE '% w %'.
    body_norm      TEXT   NOT NULL,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX notes_recording ON notes (tenant, recording_id);

CREATE TABLE custom_fields (
    tenant     TEXT    NOT NULL,
    id         BLOB    NOT NULL,
    name       TEXT    NOT NULL,
    field_type TEXT    NOT NULL CHECK (field_type IN ('text', 'number', 'date', 'choice')),
    choices    TEXT    NOT NULL DEFAULT '[]',
    searchable BOOLEAN NOT NULL DEFAULT FALSE,
    editable   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE custom_field_values (
    tenant       TEXT NOT NULL,
    recording_id BLOB NOT NULL,
    field_id     BLOB NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (tenant, recording_id, field_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, field_id) REFERENCES custom_fields (tenant, id) ON DELETE CASCADE
);

CREATE TABLE saved_queries (
    tenant     TEXT   NOT NULL,
    id         BLOB   NOT NULL,
    user_id    BLOB   NOT NULL,
    name       TEXT   NOT NULL,
    filter     TEXT   NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, user_id, name),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);

CREATE TABLE transcripts (
    tenant       TEXT   NOT NULL,
    recording_id BLOB   NOT NULL,
    channel      INTEGER NOT NULL,
    engine       TEXT   NOT NULL,
    language     TEXT   NOT NULL DEFAULT '',
    body         TEXT   NOT NULL,
    words        TEXT   NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, recording_id, channel),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);

CREATE TABLE alarms (
    tenant     TEXT   NOT NULL,
    id         BLOB   NOT NULL,
    alarm_type TEXT   NOT NULL,
    source     TEXT   NOT NULL DEFAULT '',
    severity   TEXT   NOT NULL CHECK (severity IN ('info', 'minor', 'major', 'critical')),
    message    TEXT   NOT NULL,
    raised_at  INTEGER NOT NULL,
    cleared_at INTEGER,
    PRIMARY KEY (tenant, id)
);
-- At most one active alarm per type and source: raising again updates it.
CREATE UNIQUE INDEX alarms_active ON alarms (tenant, alarm_type, source) WHERE cleared_at IS NULL;
CREATE INDEX alarms_raised ON alarms (tenant, raised_at);

CREATE TABLE activity_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant  TEXT    NOT NULL,
    time    INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL
);
CREATE INDEX activity_time ON activity_log (tenant, time);

CREATE TABLE web_sessions (
    tenant       TEXT   NOT NULL,
    id_hash      TEXT   NOT NULL,
    user_id      BLOB   NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ip           TEXT   NOT NULL DEFAULT '',
    user_agent   TEXT   NOT NULL DEFAULT '',
    revoked_at   INTEGER,
    PRIMARY KEY (tenant, id_hash),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX web_sessions_user ON web_sessions (tenant, user_id);

-- Audit log: append-only, hash-chained per tenant. audit_head holds each chain's last entry (the
-- row appends lock, so the chain never forks) and the anchor left by the last purge.
CREATE TABLE audit_head (
    tenant           TEXT   NOT NULL PRIMARY KEY,
    seq              INTEGER NOT NULL,
    hash             TEXT   NOT NULL,
    anchor_seq       INTEGER NOT NULL DEFAULT 0,
    anchor_hash      TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE audit_log (
    tenant       TEXT   NOT NULL,
    seq          INTEGER NOT NULL,
    time         INTEGER NOT NULL,
    actor        TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    item_type    TEXT   NOT NULL DEFAULT '',
    item_id      TEXT   NOT NULL DEFAULT '',
    details      TEXT   NOT NULL DEFAULT '{}',
    impersonator TEXT,
    prev_hash    TEXT   NOT NULL,
    hash         TEXT   NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_time ON audit_log (tenant, time);
CREATE INDEX audit_actor ON audit_log (tenant, actor, time);
CREATE INDEX audit_item ON audit_log (tenant, item_type, item_id);

-- UPDATE is never allowed; DELETE only for rows a purge has permitted (audit_purge_permit is
-- written and emptied inside the purge transaction).
CREATE TABLE audit_purge_permit (
    tenant  TEXT    NOT NULL PRIMARY KEY,
    through INTEGER NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE rejected');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_permit p WHERE p.tenant = OLD.tenant AND OLD.seq <= p.through)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE rejected');
END;

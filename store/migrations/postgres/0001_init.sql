-- CallVault vault schema, PostgreSQL. Every row carries its tenant (a namespace); every key and
-- index is led by it. Times are BIGINT microseconds since the Unix epoch (the SQLite schema uses
-- the same representation, so the Rust layer is identical on both).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE users (
    tenant               TEXT    NOT NULL,
    id                   UUID    NOT NULL,
    username             TEXT    NOT NULL,
    display_name         TEXT    NOT NULL DEFAULT '',
    email                TEXT    NOT NULL DEFAULT '',
    password_hash        TEXT,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins        BIGINT  NOT NULL DEFAULT 0,
    locked_until         BIGINT,
    legal_hold           BOOLEAN NOT NULL DEFAULT FALSE,
    time_zone            TEXT    NOT NULL DEFAULT 'UTC',
    source               TEXT    NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'oidc', 'scim')),
    external_id          TEXT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, username)
);
CREATE UNIQUE INDEX users_external ON users (tenant, source, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE groups (
    tenant      TEXT   NOT NULL,
    id          UUID   NOT NULL,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    external_id TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE memberships (
    tenant   TEXT NOT NULL,
    group_id UUID NOT NULL,
    user_id  UUID NOT NULL,
    PRIMARY KEY (tenant, group_id, user_id),
    FOREIGN KEY (tenant, group_id) REFERENCES groups (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX memberships_user ON memberships (tenant, user_id);

-- Numbers that associate calls with users; a number belongs to at most one user per tenant.
CREATE TABLE extensions (
    tenant  TEXT NOT NULL,
    number  TEXT NOT NULL,
    user_id UUID NOT NULL,
    PRIMARY KEY (tenant, number),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX extensions_user ON extensions (tenant, user_id);

CREATE TABLE recordings (
    tenant               TEXT    NOT NULL,
    id                   UUID    NOT NULL,
    call_id              TEXT    NOT NULL,
    sip_call_id          TEXT    NOT NULL DEFAULT '',
    session_id           TEXT    NOT NULL DEFAULT '',
    segment              BIGINT  NOT NULL DEFAULT 0,
    start_time           BIGINT  NOT NULL,
    answer_time          BIGINT,
    end_time             BIGINT,
    duration_ms          BIGINT  NOT NULL DEFAULT 0,
    wait_ms              BIGINT,
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
    owner_user_id        UUID,
    owner_item           TEXT    NOT NULL DEFAULT '',
    agents               TEXT    NOT NULL DEFAULT '[]',
    skills               TEXT    NOT NULL DEFAULT '[]',
    profile              TEXT    NOT NULL DEFAULT '',
    storage_target       TEXT    NOT NULL DEFAULT '',
    object_key           TEXT,
    size_bytes           BIGINT,
    codec                TEXT    NOT NULL DEFAULT '',
    channels             BIGINT  NOT NULL DEFAULT 0,
    sha256               TEXT,
    metadata_digest      TEXT,
    signature            TEXT,
    key_id               TEXT,
    expires_at           BIGINT,
    legal_hold           BOOLEAN NOT NULL DEFAULT FALSE,
    delete_mode          TEXT    CHECK (delete_mode IN ('media_only', 'all')),
    delete_requested_by  TEXT,
    delete_authorised_by TEXT,
    delete_note          TEXT,
    delete_requested_at  BIGINT,
    deleted_at           BIGINT,
    status               TEXT    NOT NULL CHECK (status IN ('recording', 'pending', 'available', 'incomplete', 'deleted')),
    raw_metadata         TEXT,
    search_text          TEXT    NOT NULL DEFAULT '',
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- The default listing and every date-range search.
CREATE INDEX recordings_start ON recordings (tenant, start_time, id);
-- Scope Own / a user filter.
CREATE INDEX recordings_owner_start ON recordings (tenant, owner_user_id, start_time, id);
CREATE INDEX recordings_active ON recordings (tenant, start_time) WHERE status = 'recording';
CREATE INDEX recordings_expiry ON recordings (tenant, expires_at) WHERE status <> 'deleted';
CREATE INDEX recordings_call ON recordings (tenant, call_id);
-- Party wildcards (contains, starts-with, whole word) are LIKE patterns; trigram indexes serve them.
CREATE INDEX recordings_calling_trgm ON recordings USING gin (lower(calling_number) gin_trgm_ops, calling_norm gin_trgm_ops);
CREATE INDEX recordings_called_trgm ON recordings USING gin (lower(called_number) gin_trgm_ops, called_norm gin_trgm_ops);
CREATE INDEX recordings_answering_trgm ON recordings USING gin (lower(answering_number) gin_trgm_ops, answering_norm gin_trgm_ops);
CREATE INDEX recordings_search_trgm ON recordings USING gin (search_text gin_trgm_ops);

-- Groups a recording belongs to, captured at call time (the owner's groups then).
CREATE TABLE recording_groups (
    tenant       TEXT NOT NULL,
    recording_id UUID NOT NULL,
    group_id     UUID NOT NULL,
    PRIMARY KEY (tenant, recording_id, group_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX recording_groups_group ON recording_groups (tenant, group_id, recording_id);

CREATE TABLE recording_copies (
    tenant       TEXT   NOT NULL,
    recording_id UUID   NOT NULL,
    connector    TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    object_key   TEXT   NOT NULL,
    sha256       TEXT   NOT NULL,
    archived_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, recording_id, connector),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);

CREATE TABLE tags (
    tenant     TEXT   NOT NULL,
    id         UUID   NOT NULL,
    name       TEXT   NOT NULL,
    color      TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

CREATE TABLE recording_tags (
    tenant       TEXT NOT NULL,
    recording_id UUID NOT NULL,
    tag_id       UUID NOT NULL,
    PRIMARY KEY (tenant, recording_id, tag_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, tag_id) REFERENCES tags (tenant, id) ON DELETE CASCADE
);
CREATE INDEX recording_tags_tag ON recording_tags (tenant, tag_id, recording_id);

CREATE TABLE notes (
    tenant         TEXT   NOT NULL,
    id             UUID   NOT NULL,
    recording_id   UUID   NOT NULL,
    author_user_id UUID,
    author_name    TEXT   NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    body           TEXT   NOT NULL,
    -- " word word " lower-cased, punctuation folded to spaces: whole-word search is LIKE '% w %'.
    body_norm      TEXT   NOT NULL,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX notes_recording ON notes (tenant, recording_id);
CREATE INDEX notes_norm_trgm ON notes USING gin (body_norm gin_trgm_ops);

CREATE TABLE custom_fields (
    tenant     TEXT    NOT NULL,
    id         UUID    NOT NULL,
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
    recording_id UUID NOT NULL,
    field_id     UUID NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (tenant, recording_id, field_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, field_id) REFERENCES custom_fields (tenant, id) ON DELETE CASCADE
);

CREATE TABLE saved_queries (
    tenant     TEXT   NOT NULL,
    id         UUID   NOT NULL,
    user_id    UUID   NOT NULL,
    name       TEXT   NOT NULL,
    filter     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, user_id, name),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);

CREATE TABLE transcripts (
    tenant       TEXT   NOT NULL,
    recording_id UUID   NOT NULL,
    channel      BIGINT NOT NULL,
    engine       TEXT   NOT NULL,
    language     TEXT   NOT NULL DEFAULT '',
    body         TEXT   NOT NULL,
    words        TEXT   NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, recording_id, channel),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);

CREATE TABLE alarms (
    tenant     TEXT   NOT NULL,
    id         UUID   NOT NULL,
    alarm_type TEXT   NOT NULL,
    source     TEXT   NOT NULL DEFAULT '',
    severity   TEXT   NOT NULL CHECK (severity IN ('info', 'minor', 'major', 'critical')),
    message    TEXT   NOT NULL,
    raised_at  BIGINT NOT NULL,
    cleared_at BIGINT,
    PRIMARY KEY (tenant, id)
);
-- At most one active alarm per type and source: raising again updates it.
CREATE UNIQUE INDEX alarms_active ON alarms (tenant, alarm_type, source) WHERE cleared_at IS NULL;
CREATE INDEX alarms_raised ON alarms (tenant, raised_at);

CREATE TABLE activity_log (
    tenant  TEXT   NOT NULL,
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    time    BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    message TEXT   NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX activity_time ON activity_log (tenant, time);

CREATE TABLE web_sessions (
    tenant       TEXT   NOT NULL,
    id_hash      TEXT   NOT NULL,
    user_id      UUID   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ip           TEXT   NOT NULL DEFAULT '',
    user_agent   TEXT   NOT NULL DEFAULT '',
    revoked_at   BIGINT,
    PRIMARY KEY (tenant, id_hash),
    FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
);
CREATE INDEX web_sessions_user ON web_sessions (tenant, user_id);

-- Audit log: append-only, hash-chained per tenant. audit_head holds each chain's last entry (the
-- row appends lock, so the chain never forks) and the anchor left by the last purge.
CREATE TABLE audit_head (
    tenant           TEXT   NOT NULL PRIMARY KEY,
    seq              BIGINT NOT NULL,
    hash             TEXT   NOT NULL,
    anchor_seq       BIGINT NOT NULL DEFAULT 0,
    anchor_hash      TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE audit_log (
    tenant       TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    time         BIGINT NOT NULL,
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

-- UPDATE is never allowed; DELETE only inside callvault_audit_purge, which marks its transaction
-- with the tenant and the last sequence number it may remove.
CREATE FUNCTION callvault_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_permit TEXT := coalesce(current_setting('callvault.audit_purge_through', true), '');
BEGIN
    IF TG_OP = 'DELETE' AND v_permit <> '' THEN
        IF split_part(v_permit, ':', 1) = OLD.tenant
           AND OLD.seq <= split_part(v_permit, ':', 2)::bigint THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % rejected', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION callvault_audit_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION callvault_audit_guard();

-- Removes a tenant's entries with seq <= p_through and records the anchor (the last removed
-- entry's hash) so the remaining chain verifies from p_through + 1. The caller holds the chain head
-- lock and appends the purge entry in the same transaction.
CREATE FUNCTION callvault_audit_purge(p_tenant TEXT, p_through BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_anchor TEXT;
    v_count  BIGINT;
BEGIN
    SELECT hash INTO v_anchor FROM audit_log WHERE tenant = p_tenant AND seq = p_through;
    IF v_anchor IS NULL THEN
        RAISE EXCEPTION 'audit purge: entry %:% not found', p_tenant, p_through;
    END IF;
    PERFORM set_config('callvault.audit_purge_through', p_tenant || ':' || p_through::text, true);
    DELETE FROM audit_log WHERE tenant = p_tenant AND seq <= p_through;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM set_config('callvault.audit_purge_through', '', true);
    UPDATE audit_head SET anchor_seq = p_through, anchor_hash = v_anchor WHERE tenant = p_tenant;
    RETURN v_count;
END;
$$;

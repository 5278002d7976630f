-- Jobs: per-profile retention and per-connector archive queries over millions of recordings.
CREATE INDEX recordings_profile_expiry ON recordings (tenant, profile, expires_at, id) WHERE status <> 'deleted';
CREATE INDEX recordings_profile_start ON recordings (tenant, profile, start_time, id);
CREATE INDEX recording_copies_connector ON recording_copies (tenant, connector);

-- A tag filter with a date range (the typical search: "calls tagged X this month") walks only
-- that tag's calls in that range: each tagging carries its call's start time, which never
-- changes, so the range narrows the tag's index before any recording row is read.
ALTER TABLE recording_tags ADD COLUMN start_time BIGINT NOT NULL DEFAULT 0;
UPDATE recording_tags rt SET start_time = r.start_time
    FROM recordings r WHERE r.tenant = rt.tenant AND r.id = rt.recording_id;
CREATE INDEX recording_tags_tag_time ON recording_tags (tenant, tag_id, start_time, recording_id);
DROP INDEX recording_tags_tag;

-- The users on a meeting (a conference call) and the part of it each attended, in ms from the
-- recording's start: a user whose access comes only from attending sees that part (F-40).
CREATE TABLE recording_attendees (
    tenant       TEXT   NOT NULL,
    recording_id UUID   NOT NULL,
    user_id      UUID   NOT NULL,
    joined_ms    BIGINT NOT NULL DEFAULT 0,
    left_ms      BIGINT,
    PRIMARY KEY (tenant, recording_id, user_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX recording_attendees_user ON recording_attendees (tenant, user_id, recording_id);

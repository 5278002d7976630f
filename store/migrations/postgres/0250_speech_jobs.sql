-- Transcription (SpeechJob) bookkeeping. The transcripts themselves live in `transcripts`.

-- One row per SpeechJob: its Incremental watermark (the (start_time, id) position up to which
-- every matching recording has been settled) and its run times (standalone has no status).
CREATE TABLE speech_job_state (
    tenant            TEXT   NOT NULL,
    job               TEXT   NOT NULL,
    watermark_start   BIGINT,
    watermark_id      UUID,
    last_run_time     BIGINT,
    last_success_time BIGINT,
    PRIMARY KEY (tenant, job)
);

-- What a SpeechJob did with each recording it attempted: 'complete' (transcripts stored) or
-- 'failed' (retried by the next run, whatever the watermark says).
CREATE TABLE speech_job_records (
    tenant       TEXT   NOT NULL,
    job          TEXT   NOT NULL,
    recording_id UUID   NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('complete', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 1,
    error        TEXT   NOT NULL DEFAULT '',
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, job, recording_id),
    FOREIGN KEY (tenant, recording_id) REFERENCES recordings (tenant, id) ON DELETE CASCADE
);
CREATE INDEX speech_job_records_status ON speech_job_records (tenant, job, status);

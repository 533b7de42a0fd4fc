-- Records of asynchronous video jobs (`/v1/videos`). The record is the truth about a job:
-- the gateway creates it, the worker moves it forward, and any gateway answers from it.
-- `api_key_sha256` is the digest of the key that created the job; only that key reads it.

CREATE TABLE IF NOT EXISTS video_jobs (
    id               TEXT PRIMARY KEY,
    api_key_sha256   TEXT NOT NULL,
    model            TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    seconds          BIGINT NOT NULL,
    size             TEXT NOT NULL,
    resolution       TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         BIGINT NOT NULL DEFAULT 0,
    error_code       TEXT,
    error_message    TEXT,
    video_key        TEXT,
    thumbnail_key    TEXT,
    video_bytes      BIGINT,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    completed_at_ms  BIGINT,
    expires_at_ms    BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS video_jobs_created_idx ON video_jobs (created_at_ms);

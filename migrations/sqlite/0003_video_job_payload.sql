-- The queued job of each `/v1/videos` record, as JSON. With the in-process queue of
-- `grok2api serve` a job still queued or running when the process stops is lost; on the
-- next start the record's job is queued again. Also the lookups of unfinished jobs and of
-- records past their retention.

ALTER TABLE video_jobs ADD COLUMN job TEXT;

CREATE INDEX IF NOT EXISTS video_jobs_status_idx ON video_jobs (status);
CREATE INDEX IF NOT EXISTS video_jobs_updated_idx ON video_jobs (updated_at_ms);

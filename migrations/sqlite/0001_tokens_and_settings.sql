-- Account tokens (sealed; only the SHA-256 id is in clear) and a key-value settings table.
-- IF NOT EXISTS keeps the script harmless if it ever meets tables that already exist.

CREATE TABLE IF NOT EXISTS tokens (
    id               TEXT PRIMARY KEY NOT NULL,
    sealed           TEXT NOT NULL,
    pool             TEXT NOT NULL,
    status           TEXT NOT NULL,
    quota            BIGINT NOT NULL DEFAULT 0,
    tags             TEXT NOT NULL DEFAULT '[]',
    note             TEXT NOT NULL DEFAULT '',
    created_at_ms    BIGINT NOT NULL,
    last_used_at_ms  BIGINT,
    use_count        BIGINT NOT NULL DEFAULT 0,
    fail_count       BIGINT NOT NULL DEFAULT 0,
    last_fail_reason TEXT,
    last_sync_at_ms  BIGINT,
    updated_at_ms    BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS tokens_pool_idx ON tokens (pool);

CREATE TABLE IF NOT EXISTS settings (
    key           TEXT PRIMARY KEY NOT NULL,
    value         TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

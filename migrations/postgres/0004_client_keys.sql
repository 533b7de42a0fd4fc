-- Named client API keys. Only a lookup prefix and the SHA-256 of the whole key are kept;
-- the key itself is shown once, when it is created.
-- `models` is a JSON list of allowed model ids (empty: every model); a zero
-- `rate_limit_per_minute` means no limit. `request_count` and `last_used_at_ms` are
-- written in batches by the gateways.

CREATE TABLE IF NOT EXISTS client_keys (
    id                    TEXT PRIMARY KEY,
    prefix                TEXT NOT NULL UNIQUE,
    key_sha256            TEXT NOT NULL,
    name                  TEXT NOT NULL,
    models                TEXT NOT NULL DEFAULT '[]',
    rate_limit_per_minute BIGINT NOT NULL DEFAULT 0,
    enabled               BIGINT NOT NULL DEFAULT 1,
    request_count         BIGINT NOT NULL DEFAULT 0,
    created_at_ms         BIGINT NOT NULL,
    last_used_at_ms       BIGINT,
    updated_at_ms         BIGINT NOT NULL
);

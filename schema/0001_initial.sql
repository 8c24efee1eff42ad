-- provider-router: the first schema. Timestamps are Unix milliseconds; JSON is stored as TEXT.

CREATE TABLE providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    priority          INTEGER NOT NULL DEFAULT 0,
    weight            INTEGER NOT NULL DEFAULT 1 CHECK (weight > 0),
    description       TEXT,
    limits            TEXT,
    archived_at       INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_used_at      INTEGER,
    last_error_at     INTEGER,
    last_error        TEXT,
    success_count     INTEGER NOT NULL DEFAULT 0,
    error_count       INTEGER NOT NULL DEFAULT 0,
    last_health_check INTEGER,
    health_status     TEXT
);

CREATE TABLE provider_configs (
    provider_id  TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    is_sensitive INTEGER NOT NULL DEFAULT 0 CHECK (is_sensitive IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (provider_id, key)
);

CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    description  TEXT,
    capabilities TEXT,
    archived_at  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE provider_models (
    provider_id        TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    model_id           TEXT NOT NULL REFERENCES models (id) ON DELETE RESTRICT,
    is_default         INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    upstream_model     TEXT,
    input_cost_per_1k  REAL,
    output_cost_per_1k REAL,
    currency           TEXT NOT NULL DEFAULT 'USD',
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (provider_id, model_id)
);
CREATE INDEX provider_models_model ON provider_models (model_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    rpm_limit    INTEGER,
    tpm_limit    INTEGER,
    models       TEXT,
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

-- History. Rows reference providers with ON DELETE RESTRICT: no management action can drop them.
CREATE TABLE requests (
    id                TEXT PRIMARY KEY,
    created_at        INTEGER NOT NULL,
    endpoint          TEXT NOT NULL,
    client_key_id     TEXT REFERENCES api_keys (id) ON DELETE RESTRICT,
    model             TEXT,
    provider_id       TEXT REFERENCES providers (id) ON DELETE RESTRICT,
    upstream_model    TEXT,
    stream            INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL,
    status_code       INTEGER NOT NULL,
    latency_ms        REAL NOT NULL,
    ttft_ms           REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    cost              REAL,
    currency          TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    error             TEXT
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_model ON requests (model, created_at);
CREATE INDEX requests_provider ON requests (provider_id, created_at);
CREATE INDEX requests_status ON requests (status, created_at);

CREATE TABLE attempts (
    request_id  TEXT NOT NULL REFERENCES requests (id) ON DELETE RESTRICT,
    n           INTEGER NOT NULL,
    provider_id TEXT NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    started_at  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    status_code INTEGER,
    latency_ms  REAL NOT NULL,
    error       TEXT,
    PRIMARY KEY (request_id, n)
);
CREATE INDEX attempts_provider ON attempts (provider_id, started_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (key, value) VALUES ('config_version', '0');

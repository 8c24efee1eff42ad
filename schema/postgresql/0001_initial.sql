-- provider-router: the first schema, PostgreSQL's form of ../0001_initial.sql (same tables, columns
-- and indexes; BIGINT for SQLite's INTEGER, DOUBLE PRECISION for REAL). Timestamps are Unix
-- milliseconds; JSON is stored as TEXT.

CREATE TABLE providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    enabled           BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    priority          BIGINT NOT NULL DEFAULT 0,
    weight            BIGINT NOT NULL DEFAULT 1 CHECK (weight > 0),
    description       TEXT,
    limits            TEXT,
    archived_at       BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_used_at      BIGINT,
    last_error_at     BIGINT,
    last_error        TEXT,
    success_count     BIGINT NOT NULL DEFAULT 0,
    error_count       BIGINT NOT NULL DEFAULT 0,
    last_health_check BIGINT,
    health_status     TEXT
);

CREATE TABLE provider_configs (
    provider_id  TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    is_sensitive BIGINT NOT NULL DEFAULT 0 CHECK (is_sensitive IN (0, 1)),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (provider_id, key)
);

CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    description  TEXT,
    capabilities TEXT,
    archived_at  BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE provider_models (
    provider_id        TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    model_id           TEXT NOT NULL REFERENCES models (id) ON DELETE RESTRICT,
    is_default         BIGINT NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    upstream_model     TEXT,
    input_cost_per_1k  DOUBLE PRECISION,
    output_cost_per_1k DOUBLE PRECISION,
    currency           TEXT NOT NULL DEFAULT 'USD',
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (provider_id, model_id)
);
CREATE INDEX provider_models_model ON provider_models (model_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    enabled      BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    rpm_limit    BIGINT,
    tpm_limit    BIGINT,
    models       TEXT,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

-- History. Rows reference providers with ON DELETE RESTRICT: no management action can drop them.
CREATE TABLE requests (
    id                TEXT PRIMARY KEY,
    created_at        BIGINT NOT NULL,
    endpoint          TEXT NOT NULL,
    client_key_id     TEXT REFERENCES api_keys (id) ON DELETE RESTRICT,
    model             TEXT,
    provider_id       TEXT REFERENCES providers (id) ON DELETE RESTRICT,
    upstream_model    TEXT,
    stream            BIGINT NOT NULL DEFAULT 0,
    status            TEXT NOT NULL,
    status_code       BIGINT NOT NULL,
    latency_ms        DOUBLE PRECISION NOT NULL,
    ttft_ms           DOUBLE PRECISION,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    total_tokens      BIGINT,
    cost              DOUBLE PRECISION,
    currency          TEXT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    error             TEXT
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_model ON requests (model, created_at);
CREATE INDEX requests_provider ON requests (provider_id, created_at);
CREATE INDEX requests_status ON requests (status, created_at);

CREATE TABLE attempts (
    request_id  TEXT NOT NULL REFERENCES requests (id) ON DELETE RESTRICT,
    n           BIGINT NOT NULL,
    provider_id TEXT NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    started_at  BIGINT NOT NULL,
    status      TEXT NOT NULL,
    status_code BIGINT,
    latency_ms  DOUBLE PRECISION NOT NULL,
    error       TEXT,
    PRIMARY KEY (request_id, n)
);
CREATE INDEX attempts_provider ON attempts (provider_id, started_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (key, value) VALUES ('config_version', '0');

-- Every bump of config_version tells each replica at once (LISTEN provider_router_config), on
-- commit, whoever wrote it: a replica's API, the CLI, or SQL typed by hand.
CREATE FUNCTION provider_router_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('provider_router_config', NEW.value);
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_config_version AFTER UPDATE ON settings
    FOR EACH ROW WHEN (NEW.key = 'config_version' AND NEW.value IS DISTINCT FROM OLD.value)
    EXECUTE FUNCTION provider_router_notify_config();

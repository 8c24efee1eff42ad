-- The admin web UI (issue 14).
-- A request's routing trace: the candidates in the order they were to be tried, the ones skipped
-- and why, as one compact JSON document written by the recorder (attempts stay in `attempts`).
ALTER TABLE requests ADD COLUMN trace TEXT;
-- What the UI keeps on a provider: a display name and its preferences (a JSON object).
ALTER TABLE providers ADD COLUMN display_name TEXT;
ALTER TABLE providers ADD COLUMN ui_preferences TEXT;
-- GET /v1/stats/timeseries scans a time range of history: one covering index ordered by time, so
-- the scan reads no table rows.
CREATE INDEX requests_timeseries ON requests
    (created_at, provider_id, model, status, latency_ms, total_tokens, cost);

-- PostgreSQL form of schema/0007_history.sql (issue 15): the same tables and one-off roll-up,
-- with BIGINT/DOUBLE PRECISION columns, boolean sums spelled as CASE, and the derived table
-- named. Keep the two files in step.
-- History that cannot fill the disk (issue 15).
--
-- usage_hourly: one row per (hour, endpoint, provider, model, client key) with the sums of that
-- hour's requests and a latency histogram over fixed buckets (router/store/rollup.py names the
-- edges: lat_00 counts latencies under 5 ms, ..., lat_31 those of 300000 ms or more).
-- Pruning deletes requests, never these rows, so GET /v1/stats and the timeseries stay right
-- over months. A missing provider, model or key is '' (a primary key column cannot hold NULL
-- and still tell two rows apart). The recorder adds each batch's sums in the transaction that
-- inserts the batch's requests (one upsert per group, not per request).
CREATE TABLE usage_hourly (
    hour              BIGINT NOT NULL,
    endpoint          TEXT NOT NULL,
    provider_id       TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    client_key_id     TEXT NOT NULL DEFAULT '',
    requests          BIGINT NOT NULL DEFAULT 0,
    errors            BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    cost              DOUBLE PRECISION NOT NULL DEFAULT 0,
    lat_00 BIGINT NOT NULL DEFAULT 0,
    lat_01 BIGINT NOT NULL DEFAULT 0,
    lat_02 BIGINT NOT NULL DEFAULT 0,
    lat_03 BIGINT NOT NULL DEFAULT 0,
    lat_04 BIGINT NOT NULL DEFAULT 0,
    lat_05 BIGINT NOT NULL DEFAULT 0,
    lat_06 BIGINT NOT NULL DEFAULT 0,
    lat_07 BIGINT NOT NULL DEFAULT 0,
    lat_08 BIGINT NOT NULL DEFAULT 0,
    lat_09 BIGINT NOT NULL DEFAULT 0,
    lat_10 BIGINT NOT NULL DEFAULT 0,
    lat_11 BIGINT NOT NULL DEFAULT 0,
    lat_12 BIGINT NOT NULL DEFAULT 0,
    lat_13 BIGINT NOT NULL DEFAULT 0,
    lat_14 BIGINT NOT NULL DEFAULT 0,
    lat_15 BIGINT NOT NULL DEFAULT 0,
    lat_16 BIGINT NOT NULL DEFAULT 0,
    lat_17 BIGINT NOT NULL DEFAULT 0,
    lat_18 BIGINT NOT NULL DEFAULT 0,
    lat_19 BIGINT NOT NULL DEFAULT 0,
    lat_20 BIGINT NOT NULL DEFAULT 0,
    lat_21 BIGINT NOT NULL DEFAULT 0,
    lat_22 BIGINT NOT NULL DEFAULT 0,
    lat_23 BIGINT NOT NULL DEFAULT 0,
    lat_24 BIGINT NOT NULL DEFAULT 0,
    lat_25 BIGINT NOT NULL DEFAULT 0,
    lat_26 BIGINT NOT NULL DEFAULT 0,
    lat_27 BIGINT NOT NULL DEFAULT 0,
    lat_28 BIGINT NOT NULL DEFAULT 0,
    lat_29 BIGINT NOT NULL DEFAULT 0,
    lat_30 BIGINT NOT NULL DEFAULT 0,
    lat_31 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, endpoint, provider_id, model, client_key_id)
);

-- The history recorded before this migration, rolled up once.
INSERT INTO usage_hourly (hour, endpoint, provider_id, model, client_key_id,
    requests, errors, prompt_tokens, completion_tokens, total_tokens, cost,
    lat_00, lat_01, lat_02, lat_03, lat_04, lat_05, lat_06, lat_07, lat_08, lat_09, lat_10,
    lat_11, lat_12, lat_13, lat_14, lat_15, lat_16, lat_17, lat_18, lat_19, lat_20, lat_21,
    lat_22, lat_23, lat_24, lat_25, lat_26, lat_27, lat_28, lat_29, lat_30, lat_31)
SELECT created_at - created_at % 3600000, endpoint, coalesce(provider_id, ''), coalesce(model, ''),
       coalesce(client_key_id, ''), COUNT(*), SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END),
       coalesce(SUM(prompt_tokens), 0), coalesce(SUM(completion_tokens), 0),
       coalesce(SUM(total_tokens), 0), coalesce(SUM(cost), 0.0),
       SUM(CASE WHEN b = 0 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 2 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 3 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 4 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 5 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 6 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 7 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 8 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 9 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 10 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 11 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 12 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 13 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 14 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 15 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 16 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 17 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 18 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 19 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 20 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 21 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 22 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 23 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 24 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 25 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 26 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 27 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 28 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 29 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 30 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 31 THEN 1 ELSE 0 END)
FROM (SELECT *,
      CASE WHEN latency_ms < 5 THEN 0 WHEN latency_ms < 10 THEN 1 WHEN latency_ms < 25 THEN 2
           WHEN latency_ms < 50 THEN 3 WHEN latency_ms < 75 THEN 4 WHEN latency_ms < 100 THEN 5
           WHEN latency_ms < 150 THEN 6 WHEN latency_ms < 200 THEN 7 WHEN latency_ms < 250 THEN 8
           WHEN latency_ms < 300 THEN 9 WHEN latency_ms < 400 THEN 10
           WHEN latency_ms < 500 THEN 11 WHEN latency_ms < 600 THEN 12
           WHEN latency_ms < 800 THEN 13 WHEN latency_ms < 1000 THEN 14
           WHEN latency_ms < 1250 THEN 15 WHEN latency_ms < 1500 THEN 16
           WHEN latency_ms < 2000 THEN 17 WHEN latency_ms < 2500 THEN 18
           WHEN latency_ms < 3000 THEN 19 WHEN latency_ms < 4000 THEN 20
           WHEN latency_ms < 5000 THEN 21 WHEN latency_ms < 7500 THEN 22
           WHEN latency_ms < 10000 THEN 23 WHEN latency_ms < 15000 THEN 24
           WHEN latency_ms < 20000 THEN 25 WHEN latency_ms < 30000 THEN 26
           WHEN latency_ms < 45000 THEN 27 WHEN latency_ms < 60000 THEN 28
           WHEN latency_ms < 120000 THEN 29 WHEN latency_ms < 300000 THEN 30 ELSE 31 END AS b FROM requests) AS r
GROUP BY 1, 2, 3, 4, 5;

-- The latency histograms again, per hour and provider and per hour and model only: the overview's
-- week and month windows read percentiles from these few rows instead of summing 32 columns over
-- every (endpoint, provider, model, key) row of usage_hourly. The recorder upserts them in the
-- same transaction as usage_hourly.
CREATE TABLE latency_by_provider (
    hour        BIGINT NOT NULL,
    provider_id TEXT NOT NULL DEFAULT '',
    lat_00 BIGINT NOT NULL DEFAULT 0,
    lat_01 BIGINT NOT NULL DEFAULT 0,
    lat_02 BIGINT NOT NULL DEFAULT 0,
    lat_03 BIGINT NOT NULL DEFAULT 0,
    lat_04 BIGINT NOT NULL DEFAULT 0,
    lat_05 BIGINT NOT NULL DEFAULT 0,
    lat_06 BIGINT NOT NULL DEFAULT 0,
    lat_07 BIGINT NOT NULL DEFAULT 0,
    lat_08 BIGINT NOT NULL DEFAULT 0,
    lat_09 BIGINT NOT NULL DEFAULT 0,
    lat_10 BIGINT NOT NULL DEFAULT 0,
    lat_11 BIGINT NOT NULL DEFAULT 0,
    lat_12 BIGINT NOT NULL DEFAULT 0,
    lat_13 BIGINT NOT NULL DEFAULT 0,
    lat_14 BIGINT NOT NULL DEFAULT 0,
    lat_15 BIGINT NOT NULL DEFAULT 0,
    lat_16 BIGINT NOT NULL DEFAULT 0,
    lat_17 BIGINT NOT NULL DEFAULT 0,
    lat_18 BIGINT NOT NULL DEFAULT 0,
    lat_19 BIGINT NOT NULL DEFAULT 0,
    lat_20 BIGINT NOT NULL DEFAULT 0,
    lat_21 BIGINT NOT NULL DEFAULT 0,
    lat_22 BIGINT NOT NULL DEFAULT 0,
    lat_23 BIGINT NOT NULL DEFAULT 0,
    lat_24 BIGINT NOT NULL DEFAULT 0,
    lat_25 BIGINT NOT NULL DEFAULT 0,
    lat_26 BIGINT NOT NULL DEFAULT 0,
    lat_27 BIGINT NOT NULL DEFAULT 0,
    lat_28 BIGINT NOT NULL DEFAULT 0,
    lat_29 BIGINT NOT NULL DEFAULT 0,
    lat_30 BIGINT NOT NULL DEFAULT 0,
    lat_31 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, provider_id)
);
INSERT INTO latency_by_provider (hour, provider_id,
    lat_00, lat_01, lat_02, lat_03, lat_04, lat_05, lat_06, lat_07, lat_08, lat_09, lat_10,
    lat_11, lat_12, lat_13, lat_14, lat_15, lat_16, lat_17, lat_18, lat_19, lat_20, lat_21,
    lat_22, lat_23, lat_24, lat_25, lat_26, lat_27, lat_28, lat_29, lat_30, lat_31)
SELECT hour, provider_id,
       SUM(lat_00), SUM(lat_01), SUM(lat_02), SUM(lat_03), SUM(lat_04), SUM(lat_05), SUM(lat_06),
       SUM(lat_07), SUM(lat_08), SUM(lat_09), SUM(lat_10), SUM(lat_11), SUM(lat_12), SUM(lat_13),
       SUM(lat_14), SUM(lat_15), SUM(lat_16), SUM(lat_17), SUM(lat_18), SUM(lat_19), SUM(lat_20),
       SUM(lat_21), SUM(lat_22), SUM(lat_23), SUM(lat_24), SUM(lat_25), SUM(lat_26), SUM(lat_27),
       SUM(lat_28), SUM(lat_29), SUM(lat_30), SUM(lat_31)
FROM usage_hourly GROUP BY hour, provider_id;

CREATE TABLE latency_by_model (
    hour  BIGINT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    lat_00 BIGINT NOT NULL DEFAULT 0,
    lat_01 BIGINT NOT NULL DEFAULT 0,
    lat_02 BIGINT NOT NULL DEFAULT 0,
    lat_03 BIGINT NOT NULL DEFAULT 0,
    lat_04 BIGINT NOT NULL DEFAULT 0,
    lat_05 BIGINT NOT NULL DEFAULT 0,
    lat_06 BIGINT NOT NULL DEFAULT 0,
    lat_07 BIGINT NOT NULL DEFAULT 0,
    lat_08 BIGINT NOT NULL DEFAULT 0,
    lat_09 BIGINT NOT NULL DEFAULT 0,
    lat_10 BIGINT NOT NULL DEFAULT 0,
    lat_11 BIGINT NOT NULL DEFAULT 0,
    lat_12 BIGINT NOT NULL DEFAULT 0,
    lat_13 BIGINT NOT NULL DEFAULT 0,
    lat_14 BIGINT NOT NULL DEFAULT 0,
    lat_15 BIGINT NOT NULL DEFAULT 0,
    lat_16 BIGINT NOT NULL DEFAULT 0,
    lat_17 BIGINT NOT NULL DEFAULT 0,
    lat_18 BIGINT NOT NULL DEFAULT 0,
    lat_19 BIGINT NOT NULL DEFAULT 0,
    lat_20 BIGINT NOT NULL DEFAULT 0,
    lat_21 BIGINT NOT NULL DEFAULT 0,
    lat_22 BIGINT NOT NULL DEFAULT 0,
    lat_23 BIGINT NOT NULL DEFAULT 0,
    lat_24 BIGINT NOT NULL DEFAULT 0,
    lat_25 BIGINT NOT NULL DEFAULT 0,
    lat_26 BIGINT NOT NULL DEFAULT 0,
    lat_27 BIGINT NOT NULL DEFAULT 0,
    lat_28 BIGINT NOT NULL DEFAULT 0,
    lat_29 BIGINT NOT NULL DEFAULT 0,
    lat_30 BIGINT NOT NULL DEFAULT 0,
    lat_31 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, model)
);
INSERT INTO latency_by_model (hour, model,
    lat_00, lat_01, lat_02, lat_03, lat_04, lat_05, lat_06, lat_07, lat_08, lat_09, lat_10,
    lat_11, lat_12, lat_13, lat_14, lat_15, lat_16, lat_17, lat_18, lat_19, lat_20, lat_21,
    lat_22, lat_23, lat_24, lat_25, lat_26, lat_27, lat_28, lat_29, lat_30, lat_31)
SELECT hour, model,
       SUM(lat_00), SUM(lat_01), SUM(lat_02), SUM(lat_03), SUM(lat_04), SUM(lat_05), SUM(lat_06),
       SUM(lat_07), SUM(lat_08), SUM(lat_09), SUM(lat_10), SUM(lat_11), SUM(lat_12), SUM(lat_13),
       SUM(lat_14), SUM(lat_15), SUM(lat_16), SUM(lat_17), SUM(lat_18), SUM(lat_19), SUM(lat_20),
       SUM(lat_21), SUM(lat_22), SUM(lat_23), SUM(lat_24), SUM(lat_25), SUM(lat_26), SUM(lat_27),
       SUM(lat_28), SUM(lat_29), SUM(lat_30), SUM(lat_31)
FROM usage_hourly GROUP BY hour, model;

-- Failed client authentication, counted per minute, source address, presented key prefix and
-- endpoint instead of one requests row each: anyone who reaches the port could otherwise grow
-- the history without bound. Pruned with the history.
CREATE TABLE auth_failures (
    minute     BIGINT NOT NULL,
    source     TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    failures   BIGINT NOT NULL,
    first_at   BIGINT NOT NULL,
    last_at    BIGINT NOT NULL,
    PRIMARY KEY (minute, source, key_prefix, endpoint)
);

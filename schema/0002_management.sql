-- Management: indexes that keep GET /v1/stats fast on a large history.
-- Each covers everything the stats read, ordered by group then latency: the per-group sums are
-- one index scan and each percentile is an ordered walk of one group, never a sort of the table.
CREATE INDEX requests_stats_provider ON requests
    (provider_id, latency_ms, created_at, status, prompt_tokens, completion_tokens, total_tokens, cost);
CREATE INDEX requests_stats_model ON requests
    (model, latency_ms, created_at, status, prompt_tokens, completion_tokens, total_tokens, cost);

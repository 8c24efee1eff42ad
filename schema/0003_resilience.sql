-- Resilience (issue 5): what the last background health check found, beside health_status and
-- last_health_check from 0001.
ALTER TABLE providers ADD COLUMN health_latency_ms REAL;
ALTER TABLE providers ADD COLUMN health_error TEXT;

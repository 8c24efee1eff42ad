-- Operators' view of failures (issue 17).
-- One status name for a client that hung up: attempts always said `client_closed`, requests said
-- `client_disconnected`; old rows take the one name.
UPDATE requests SET status = 'client_closed' WHERE status = 'client_disconnected';
-- A request that failed after trying providers belongs to the last provider tried, so
-- per-provider filters and stats count it; older rows stored none.
UPDATE requests SET provider_id = (
    SELECT a.provider_id FROM attempts a WHERE a.request_id = requests.id ORDER BY a.n DESC LIMIT 1
) WHERE provider_id IS NULL AND attempts > 0;

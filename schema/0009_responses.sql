-- Stored Responses API responses (issue 13): POST /v1/responses with `store` (default true) keeps
-- the response object and the input items it was given, for GET/DELETE /v1/responses/{id},
-- GET /v1/responses/{id}/input_items and `previous_response_id`. Pruned with the history
-- (history.retention_days), by created_at.
CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,
    created_at           INTEGER NOT NULL,  -- Unix ms
    -- The client key that created it; NULL when made with the admin token or before client keys
    -- were required. Only that key (and the admin token) can read, continue or delete it.
    client_key_id        TEXT,
    request_id           TEXT,              -- its row in `requests` (no foreign key: the recorder
                                            -- writes that row in its own time)
    model                TEXT NOT NULL,
    status               TEXT NOT NULL,     -- completed | incomplete
    previous_response_id TEXT,              -- the response it continued, as the client named it
    input_items          TEXT NOT NULL,     -- JSON array: this request's own input items, with ids
    response             TEXT NOT NULL      -- JSON: the response object as it was answered
);
CREATE INDEX responses_created_at ON responses (created_at);

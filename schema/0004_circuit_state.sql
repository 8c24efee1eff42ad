-- Resilience: the circuit state a server last reported, so `provider-router provider list` can
-- show it with no server running. Servers write a provider's row only when its state changed,
-- at most once per reload interval; with several servers, the last one to change it wins.
ALTER TABLE providers ADD COLUMN circuit_state TEXT NOT NULL DEFAULT 'closed'
    CHECK (circuit_state IN ('closed', 'open', 'half-open'));
ALTER TABLE providers ADD COLUMN cooldown_until INTEGER;
ALTER TABLE providers ADD COLUMN circuit_changed_at INTEGER;

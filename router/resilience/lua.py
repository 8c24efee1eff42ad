"""The Lua scripts that keep rate limits and circuits in Redis, one atomic round trip per check.

Every script reads the clock of the Redis server (``TIME``), so replicas whose clocks disagree
still count the same windows. Times are milliseconds. Each script touches the keys of one subject
only (a provider, or a client key), all with the same hash tag, so the same scripts work on a
Redis Cluster.

Keys, under the configured prefix ``P`` and the subject ``S`` (``provider:ID`` or ``client:ID``)::

    P{S}:m         sorted set: one member per request let through, scored by time  (rpm window)
    P{S}:d         the same over a day                                             (rpd window)
    P{S}:t         sorted set: one member ``tokens:nonce`` per usage report         (tpm window)
    P{S}:tt        the sum of the tokens in P{S}:t
    P{S}:circuit   hash: state ("open"), until, trips, probe, probe_until, last_error(_at)
    P{S}:failures  sorted set: the provider failures within the breaker's window

A closed circuit has no ``circuit`` hash (or one without ``state``); half-open is "open with
``until`` in the past", and the one probe is whoever set ``probe`` (with a lease, so a replica
that dies while probing does not hold the circuit half-open for ever).
"""

from __future__ import annotations

# Shared by the scripts: the server's clock in ms, the sliding windows, opening a circuit.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Seconds (as ms) until the window of `key` (span `span`) has room for one more of `limit`.
local function window_wait(key, limit, span)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  local n = redis.call('ZCARD', key)
  if n < limit then return 0 end
  local nth = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return tonumber(nth[2]) + span - now
end

local function prune_tokens(key, total_key)
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', now - 60000)
  if #old > 0 then
    local gone = 0
    for _, member in ipairs(old) do gone = gone + tonumber(string.match(member, '^(%d+)')) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60000)
    redis.call('DECRBY', total_key, gone)
  end
  return tonumber(redis.call('GET', total_key) or '0')
end

local function tokens_wait(key, total_key, tpm)
  local total = prune_tokens(key, total_key)
  if total < tpm then return 0 end
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    total = total - tonumber(string.match(entries[i], '^(%d+)'))
    if total < tpm then return tonumber(entries[i + 1]) + 60000 - now end
  end
  return 60000
end

local function open_circuit(circuit, trips, cooldown, max_cooldown, retry_after)
  local wait = cooldown * (2 ^ trips)
  if retry_after >= 0 and retry_after > wait then wait = retry_after end
  if wait > max_cooldown then wait = max_cooldown end
  redis.call('HSET', circuit, 'state', 'open', 'until', now + wait,
             'trips', math.min(trips + 1, 30))
  redis.call('HDEL', circuit, 'probe', 'probe_until')
  redis.call('PEXPIRE', circuit, max_cooldown + 86400000)
end

-- What every script answers: the circuit as this replica should mirror it.
local function circuit_view(circuit, failures, window)
  redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
  local c = redis.call('HMGET', circuit, 'state', 'until', 'trips', 'last_error', 'last_error_at')
  return {c[1] or 'closed', tonumber(c[2] or '0'), now, tonumber(c[3] or '0'),
          redis.call('ZCARD', failures), c[4] or '', tonumber(c[5] or '0')}
end
"""

# KEYS: circuit, failures, minute, day, tokens, tokens_total
# ARGV: rpm, rpd, tpm (0: none), owner, probe lease ms, nonce, breaker window ms
# -> {verdict, wait_ms, probe (0/1), view...}; verdict "ok", "circuit_open" or "rate_limited"
ADMIT = (
    _PRELUDE
    + """
local rpm, rpd, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local owner, lease, nonce = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local window = tonumber(ARGV[7])
local probe = 0
local circuit = redis.call('HMGET', KEYS[1], 'state', 'until', 'probe_until')
if circuit[1] == 'open' then
  local until_ms = tonumber(circuit[2])
  if now < until_ms then
    return {'circuit_open', until_ms - now, 0, unpack(circuit_view(KEYS[1], KEYS[2], window))}
  end
  if tonumber(circuit[3] or '0') > now then
    return {'circuit_open', 0, 0, unpack(circuit_view(KEYS[1], KEYS[2], window))}
  end
  probe = 1
end
local wait = 0
if rpm > 0 then wait = math.max(wait, window_wait(KEYS[3], rpm, 60000)) end
if rpd > 0 then wait = math.max(wait, window_wait(KEYS[4], rpd, 86400000)) end
if tpm > 0 then wait = math.max(wait, tokens_wait(KEYS[5], KEYS[6], tpm)) end
if wait > 0 then
  return {'rate_limited', math.max(wait, 1), 0, unpack(circuit_view(KEYS[1], KEYS[2], window))}
end
if rpm > 0 then
  redis.call('ZADD', KEYS[3], now, nonce)
  redis.call('PEXPIRE', KEYS[3], 61000)
end
if rpd > 0 then
  redis.call('ZADD', KEYS[4], now, nonce)
  redis.call('PEXPIRE', KEYS[4], 86401000)
end
if probe == 1 then
  redis.call('HSET', KEYS[1], 'probe', owner, 'probe_until', now + lease)
end
return {'ok', 0, probe, unpack(circuit_view(KEYS[1], KEYS[2], window))}
"""
)

# KEYS: tokens, tokens_total; ARGV: tokens, nonce
ADD_TOKENS = (
    _PRELUDE
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. ARGV[2])
redis.call('INCRBY', KEYS[2], ARGV[1])
prune_tokens(KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('PEXPIRE', KEYS[2], 61000)
return 1
"""
)

# KEYS: circuit, failures
# ARGV: owner, threshold, window ms, cooldown ms, max cooldown ms, retry-after ms (-1: none),
#       error, error time (Unix ms), nonce
FAILURE = (
    _PRELUDE
    + """
local owner, threshold, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cooldown, max_cooldown, retry_after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'last_error', ARGV[7], 'last_error_at', ARGV[8])
redis.call('PEXPIRE', KEYS[1], max_cooldown + 86400000)
local c = redis.call('HMGET', KEYS[1], 'state', 'until', 'trips', 'probe')
local trips = tonumber(c[3] or '0')
if c[1] == 'open' then
  -- Open: a late failure of a request let through before; half-open: only the probe counts.
  if now >= tonumber(c[2]) and c[4] == owner then
    open_circuit(KEYS[1], trips, cooldown, max_cooldown, retry_after)
  end
  return circuit_view(KEYS[1], KEYS[2], window)
end
redis.call('ZADD', KEYS[2], now, ARGV[9])
redis.call('PEXPIRE', KEYS[2], window + 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= threshold then
  open_circuit(KEYS[1], trips, cooldown, max_cooldown, retry_after)
end
return circuit_view(KEYS[1], KEYS[2], window)
"""
)

# KEYS: circuit, failures; ARGV: wait ms, max cooldown ms, error, error time, window ms
RATE_LIMITED = (
    _PRELUDE
    + """
local wait, max_cooldown = math.min(tonumber(ARGV[1]), tonumber(ARGV[2])), tonumber(ARGV[2])
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
redis.call('HSET', KEYS[1], 'state', 'open', 'until', math.max(until_ms, now + wait),
           'last_error', ARGV[3], 'last_error_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
redis.call('PEXPIRE', KEYS[1], max_cooldown + 86400000)
return circuit_view(KEYS[1], KEYS[2], tonumber(ARGV[5]))
"""
)

# KEYS: circuit, failures; ARGV: window ms
# A success: closes a half-open circuit, clears the failures of a closed one, and changes nothing
# while the circuit is open (a late answer of a request let through before it opened).
SUCCESS = (
    _PRELUDE
    + """
local c = redis.call('HMGET', KEYS[1], 'state', 'until')
if c[1] == 'open' and now < tonumber(c[2]) then
  return circuit_view(KEYS[1], KEYS[2], tonumber(ARGV[1]))
end
redis.call('DEL', KEYS[1], KEYS[2])
return circuit_view(KEYS[1], KEYS[2], tonumber(ARGV[1]))
"""
)

# KEYS: circuit; ARGV: owner. The probe ended without a verdict: let the next request probe.
RELEASE = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  return 1
end
return 0
"""

# KEYS: circuit, minute, day; ARGV: nonce, owner. Takes back an admission whose request did not
# go (its client key was over its own limit, decided in the same round trip).
REFUND = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'probe') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
end
return 1
"""

# KEYS: circuit, failures; ARGV: window ms. For the mirror and the API: the circuit as it is.
VIEW = (
    _PRELUDE
    + """
return circuit_view(KEYS[1], KEYS[2], tonumber(ARGV[1]))
"""
)

# KEYS: minute, day, tokens, tokens_total. The counts for the API (like RateLimiter.usage).
USAGE = (
    _PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), prune_tokens(KEYS[3], KEYS[4])}
"""
)

"""The Lua scripts that keep the deployment's shared state in Redis, each one atomic.

Keys (``p`` is the prefix, ``voice:`` by default):

    p.."instances"        sorted set: instance id -> expiry (ms, Redis TIME), renewed by heartbeat
    p.."presence"         hash: user -> "<instance id> <session id>" (the user's one session)
    p.."users:"..inst     set: the users an instance holds (to sweep them if it dies)
    p.."conns"            hash: address group -> connections on all instances (per-IP limit)
    p.."conns:"..inst     hash: the same, this instance's share (subtracted if it dies)
    p.."allow:"..user     the allowances a user's last session ended with (expires)
    p.."inst:"..inst      pub/sub channel of an instance (signaling.busmessages)

An instance whose expiry passed is dead: its users count as offline at once, and the next
heartbeat of any instance sweeps its presence and connection counts. Every script takes the
prefix as ``ARGV[1]`` and no KEYS (one Redis, not Redis Cluster).
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = ARGV[1]
local function alive(inst)
  local exp = redis.call('ZSCORE', p .. 'instances', inst)
  return exp and tonumber(exp) >= now
end
"""

# ARGV: prefix, instance, ttl_ms. Returns 1 if the instance was not registered (a restarted
# or flushed Redis, or we were swept as dead): the caller registers its sessions again.
HEARTBEAT = (
    _NOW
    + """
local added = redis.call('ZADD', p .. 'instances', now + tonumber(ARGV[3]), ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', p .. 'instances', '-inf', '(' .. now, 'LIMIT', 0, 4)
for _, d in ipairs(dead) do
  for _, u in ipairs(redis.call('SMEMBERS', p .. 'users:' .. d)) do
    local cur = redis.call('HGET', p .. 'presence', u)
    if cur and string.sub(cur, 1, #d + 1) == d .. ' ' then
      redis.call('HDEL', p .. 'presence', u)
    end
  end
  local conns = redis.call('HGETALL', p .. 'conns:' .. d)
  for i = 1, #conns, 2 do
    if redis.call('HINCRBY', p .. 'conns', conns[i], -tonumber(conns[i + 1])) <= 0 then
      redis.call('HDEL', p .. 'conns', conns[i])
    end
  end
  redis.call('DEL', p .. 'users:' .. d, p .. 'conns:' .. d)
  redis.call('ZREM', p .. 'instances', d)
end
return added
"""
)

# ARGV: prefix, instance, session, user. Makes the session the user's one; returns
# {old "<inst> <sid>" or false, old instance alive (1/0), stored allowances or false}.
CLAIM = (
    _NOW
    + """
local user = ARGV[4]
local old = redis.call('HGET', p .. 'presence', user)
redis.call('HSET', p .. 'presence', user, ARGV[2] .. ' ' .. ARGV[3])
redis.call('SADD', p .. 'users:' .. ARGV[2], user)
local live = 0
if old then
  local inst = string.match(old, '^(%S+)')
  if inst ~= ARGV[2] then redis.call('SREM', p .. 'users:' .. inst, user) end
  if alive(inst) then live = 1 end
end
return {old or false, live, redis.call('GET', p .. 'allow:' .. user) or false}
"""
)

# ARGV: prefix, instance, session, user, old "<inst> <sid>" or "", ttl_s, allowances or "".
# A login that closed before it finished gives its claim back, if presence still names it: to
# the session it took the user from (one it neither kicked nor closed) if that instance is
# alive, else to nobody, keeping the allowances given. 1 given back, 2 forgotten; else 0 if
# presence names a third session (a newer login took the user), 3 if it names nobody or old.
UNCLAIM = (
    _NOW
    + """
local inst, user, old = ARGV[2], ARGV[4], ARGV[5]
local cur = redis.call('HGET', p .. 'presence', user)
if cur ~= inst .. ' ' .. ARGV[3] then
  if cur and cur ~= old then return 0 end
  return 3
end
local owner = string.match(old, '^(%S+) %d+$')
if owner and alive(owner) then
  redis.call('HSET', p .. 'presence', user, old)
  redis.call('SADD', p .. 'users:' .. owner, user)
  if owner ~= inst then redis.call('SREM', p .. 'users:' .. inst, user) end
  return 1
end
redis.call('HDEL', p .. 'presence', user)
redis.call('SREM', p .. 'users:' .. inst, user)
if ARGV[7] ~= '' then redis.call('SET', p .. 'allow:' .. user, ARGV[7], 'EX', tonumber(ARGV[6])) end
return 2
"""
)

# ARGV: prefix, instance, ttl_s, then session, user, allowances triples. Forgets each
# presence only if it is still that session's (a newer login elsewhere keeps its own), and
# keeps the user's allowances then, or when nobody holds the user (a release that comes late:
# the bus was down, and the instance may have been swept as dead meanwhile) unless newer ones
# (a later wall time, the 4th element) are stored. Returns how many it forgot.
RELEASE = """
local p, inst, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), 0
local function at(text)
  local ok, value = pcall(cjson.decode, text)
  if ok and type(value) == 'table' then return tonumber(value[4]) end
end
for i = 4, #ARGV, 3 do
  local user, kept = ARGV[i + 1], ARGV[i + 2]
  local key = p .. 'allow:' .. user
  local cur = redis.call('HGET', p .. 'presence', user)
  local keep = false
  if cur == inst .. ' ' .. ARGV[i] then
    redis.call('HDEL', p .. 'presence', user)
    redis.call('SREM', p .. 'users:' .. inst, user)
    n = n + 1
    keep = true
  elseif not cur then
    local stored = redis.call('GET', key)
    keep = not stored or (at(stored) or 0) <= (at(kept) or 0)
  end
  if keep then redis.call('SET', key, kept, 'EX', ttl) end
end
return n
"""

# ARGV: prefix, header (the batch's first line), envelopes (lines "e<id> <to> ...", joined by
# newlines; may be empty), then instance, acknowledgements pairs. Groups the envelopes by the
# live instance that holds their user, in order, adds the acknowledgements for each instance,
# and publishes each group as one message: the header, then its lines. Returns one character
# per envelope: "1" an instance received it, "0" nobody (alive and subscribed) holds the user.
FLUSH = (
    _NOW
    + """
local out, groups, order, live = {}, {}, {}, {}
local function group(inst)
  local g = groups[inst]
  if not g then
    g = {lines = {}, at = {}}
    groups[inst] = g
    order[#order + 1] = inst
  end
  return g
end
for line in string.gmatch(ARGV[3], '[^\\n]+') do
  out[#out + 1] = '0'
  local to = string.match(line, '^e%d+ (%S+)')
  local cur = to and redis.call('HGET', p .. 'presence', to)
  local inst = cur and string.match(cur, '^(%S+)')
  if inst then
    if live[inst] == nil then live[inst] = alive(inst) or false end
    if live[inst] then
      local g = group(inst)
      g.lines[#g.lines + 1] = line
      g.at[#g.at + 1] = #out
    end
  end
end
for i = 4, #ARGV, 2 do
  local g = group(ARGV[i])
  g.lines[#g.lines + 1] = ARGV[i + 1]
end
for _, inst in ipairs(order) do
  local g = groups[inst]
  local message = ARGV[2] .. '\\n' .. table.concat(g.lines, '\\n')
  if redis.call('PUBLISH', p .. 'inst:' .. inst, message) > 0 then
    for _, at in ipairs(g.at) do out[at] = '1' end
  end
end
return table.concat(out)
"""
)

# ARGV: prefix, instance, address group, limit. 1 and counted, or 0 if the address is full.
ADMIT = """
local p, net = ARGV[1], ARGV[3]
if tonumber(redis.call('HGET', p .. 'conns', net) or '0') >= tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBY', p .. 'conns', net, 1)
redis.call('HINCRBY', p .. 'conns:' .. ARGV[2], net, 1)
return 1
"""

# ARGV: prefix, instance, then address group, count pairs (connections that closed).
UNADMIT = """
local p = ARGV[1]
for i = 3, #ARGV, 2 do
  local net, n = ARGV[i], tonumber(ARGV[i + 1])
  for _, key in ipairs({p .. 'conns', p .. 'conns:' .. ARGV[2]}) do
    if redis.call('HINCRBY', key, net, -n) <= 0 then redis.call('HDEL', key, net) end
  end
end
return 1
"""

# ARGV: prefix, instance, then user, session pairs. Registers the instance's sessions again
# (after a Redis restart, or a sweep) where nobody holds the user. Taken back from nobody:
# a user that another instance holds now is returned, so that our stale session is closed;
# a user held by another session of this instance is left alone (a login here claimed it
# after the caller listed its sessions: the list is stale, the claim is newer).
RESYNC_USERS = """
local p, inst = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local user = ARGV[i]
  local cur = redis.call('HGET', p .. 'presence', user)
  if not cur then
    redis.call('HSET', p .. 'presence', user, inst .. ' ' .. ARGV[i + 1])
    redis.call('SADD', p .. 'users:' .. inst, user)
  elseif string.sub(cur, 1, #inst + 1) == inst .. ' ' then
    redis.call('SADD', p .. 'users:' .. inst, user)
  else
    table.insert(lost, user)
  end
end
return lost
"""

# ARGV: prefix, instance, then address group, count pairs: this instance's share, replaced.
RESYNC_CONNS = """
local p, inst = ARGV[1], ARGV[2]
local old = redis.call('HGETALL', p .. 'conns:' .. inst)
for i = 1, #old, 2 do
  if redis.call('HINCRBY', p .. 'conns', old[i], -tonumber(old[i + 1])) <= 0 then
    redis.call('HDEL', p .. 'conns', old[i])
  end
end
redis.call('DEL', p .. 'conns:' .. inst)
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', p .. 'conns', ARGV[i], tonumber(ARGV[i + 1]))
  redis.call('HSET', p .. 'conns:' .. inst, ARGV[i], ARGV[i + 1])
end
return 1
"""

# ARGV: prefix, instance, cursor, count. One SSCAN step over the instance's users: {the next
# cursor ("0" once done), then user, session pairs of those that presence says this instance
# holds}; users of the index that another instance holds now are dropped from the index.
REGISTERED = """
local p, inst = ARGV[1], ARGV[2]
local step = redis.call('SSCAN', p .. 'users:' .. inst, ARGV[3], 'COUNT', ARGV[4])
local out = {step[1]}
for _, user in ipairs(step[2]) do
  local cur = redis.call('HGET', p .. 'presence', user)
  if cur and string.sub(cur, 1, #inst + 1) == inst .. ' ' then
    out[#out + 1] = user
    out[#out + 1] = string.sub(cur, #inst + 2)
  else
    redis.call('SREM', p .. 'users:' .. inst, user)
  end
end
return out
"""

# ARGV: prefix, instance, then user, stale session, replacement triples: sessions that ended
# here without their release reaching Redis. Where presence still names the stale session, it
# names the replacement instead (the user's open session here, if any: a Redis restored from
# an older snapshot may name an earlier one) or is forgotten (replacement ""). Returns how
# many it forgot.
FORGET = """
local p, inst, n = ARGV[1], ARGV[2], 0
for i = 3, #ARGV, 3 do
  local user, newer = ARGV[i], ARGV[i + 2]
  if redis.call('HGET', p .. 'presence', user) == inst .. ' ' .. ARGV[i + 1] then
    if newer ~= '' then
      redis.call('HSET', p .. 'presence', user, inst .. ' ' .. newer)
    else
      redis.call('HDEL', p .. 'presence', user)
      redis.call('SREM', p .. 'users:' .. inst, user)
      n = n + 1
    end
  end
end
return n
"""

SCRIPTS = {
    "heartbeat": HEARTBEAT,
    "claim": CLAIM,
    "release": RELEASE,
    "flush": FLUSH,
    "admit": ADMIT,
    "unadmit": UNADMIT,
    "resync_users": RESYNC_USERS,
    "resync_conns": RESYNC_CONNS,
    "registered": REGISTERED,
    "forget": FORGET,
    "unclaim": UNCLAIM,
}

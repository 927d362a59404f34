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

# ARGV: prefix, instance, session, user, allowances, ttl_s. Forgets the presence only if it is
# still this session's (a newer login elsewhere keeps its own), then keeps the allowances.
RELEASE = """
local p, user = ARGV[1], ARGV[4]
if redis.call('HGET', p .. 'presence', user) ~= ARGV[2] .. ' ' .. ARGV[3] then return 0 end
redis.call('HDEL', p .. 'presence', user)
redis.call('SREM', p .. 'users:' .. ARGV[2], user)
redis.call('SET', p .. 'allow:' .. user, ARGV[5], 'EX', tonumber(ARGV[6]))
return 1
"""

# ARGV: prefix, user, payload. Publishes to the instance that holds the user, if it is alive;
# returns 1 if an instance received it, 0 if nobody holds the user (offline).
ROUTE = (
    _NOW
    + """
local cur = redis.call('HGET', p .. 'presence', ARGV[2])
if not cur then return 0 end
local inst = string.match(cur, '^(%S+)')
if not alive(inst) then return 0 end
return redis.call('PUBLISH', p .. 'inst:' .. inst, ARGV[3])
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

# ARGV: prefix, instance, address group.
UNADMIT = """
local p, net = ARGV[1], ARGV[3]
for _, key in ipairs({p .. 'conns', p .. 'conns:' .. ARGV[2]}) do
  if redis.call('HINCRBY', key, net, -1) <= 0 then redis.call('HDEL', key, net) end
end
return 1
"""

# ARGV: prefix, instance, then user, session pairs. Registers the instance's sessions again
# (after a Redis restart, or a sweep); a user that another instance holds now is not taken
# back: returned, so that our stale session is closed.
RESYNC_USERS = """
local p, inst = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local user, mine = ARGV[i], inst .. ' ' .. ARGV[i + 1]
  local cur = redis.call('HGET', p .. 'presence', user)
  if cur and cur ~= mine and string.sub(cur, 1, #inst + 1) ~= inst .. ' ' then
    table.insert(lost, user)
  else
    redis.call('HSET', p .. 'presence', user, mine)
    redis.call('SADD', p .. 'users:' .. inst, user)
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

SCRIPTS = {
    "heartbeat": HEARTBEAT,
    "claim": CLAIM,
    "release": RELEASE,
    "route": ROUTE,
    "admit": ADMIT,
    "unadmit": UNADMIT,
    "resync_users": RESYNC_USERS,
    "resync_conns": RESYNC_CONNS,
}

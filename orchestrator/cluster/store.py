"""Everything the cluster keeps in Redis, behind a few calls; the multi-step ones are Lua scripts
so that each is atomic (one seeder, one reaper per dead process, no trim below a reader).

Key layout (prefix `orch:`; one cluster per Redis database):

    orch:log           stream   the operations, totally ordered; fields op, a (JSON args),
                                o (origin node), q (origin sequence number), b0.. (binary args)
    orch:meta          hash     epoch (a token of this log's lifetime), base (log id of the seed)
    orch:nodes         zset     node id -> last heartbeat, ms on the Redis clock
    orch:applied       hash     node id -> last log id it applied (nothing below it is trimmed)
    orch:snaps         list     snapshot log ids, newest first
    orch:snap:<id>     hash     j (the model as JSON, bytes as placeholders), b0.. (binary values)
    orch:snaplock      string   who writes the next snapshot (expires)
    orch:data:<node>   channel  data frames for the users connected to that node (pub/sub)
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

PREFIX = "orch:"
LOG, META, NODES, APPLIED, SNAPS, SNAPLOCK = (PREFIX + k for k in
                                              ("log", "meta", "nodes", "applied", "snaps", "snaplock"))

_LUA_HELPERS = """
local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Seed an empty store: meta, the snapshot at `base`, a marker entry just after it (so that every
# later id is greater), and a heartbeat for every node the snapshot mentions, so that those that
# are gone are reaped after the timeout. Does nothing (returns 0) if another process seeded first.
# KEYS meta log snaps nodes applied; ARGV prefix epoch base marker nodes_json field value...
SEED = _LUA_HELPERS + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'base', ARGV[3])
local snap = {}
for i = 6, #ARGV do snap[#snap + 1] = ARGV[i] end
redis.call('HSET', ARGV[1] .. 'snap:' .. ARGV[3], unpack(snap))
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[2], ARGV[4], 'op', 'noop', 'a', '{}', 'o', '', 'q', '0')
local now = now_ms()
for _, node in ipairs(cjson.decode(ARGV[5])) do
  redis.call('ZADD', KEYS[4], now, node)
  redis.call('HSET', KEYS[5], node, ARGV[3])
end
return 1
"""

# The newest snapshot, registering the caller (heartbeat, applied = that snapshot) in the same step.
# KEYS meta snaps nodes applied; ARGV prefix node
JOIN = _LUA_HELPERS + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
local id = redis.call('LINDEX', KEYS[2], 0)
redis.call('ZADD', KEYS[3], now_ms(), ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], id)
return {epoch, id, redis.call('HGETALL', ARGV[1] .. 'snap:' .. id)}
"""

# Heartbeat, then reap: every node silent longer than the timeout is removed and a node_down
# operation appended, in one atomic step, so exactly one survivor reports each dead node.
# Returns false when the store lost its state (meta gone), else the nodes reaped.
# KEYS meta nodes applied log; ARGV epoch node applied_id timeout_ms
BEAT = _LUA_HELPERS + """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return false end
local now = now_ms()
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
local limit = '(' .. string.format('%d', now - tonumber(ARGV[4]))
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', limit)
for _, node in ipairs(stale) do
  redis.call('ZREM', KEYS[2], node)
  redis.call('HDEL', KEYS[3], node)
  local args = cjson.encode({node = node})
  redis.call('XADD', KEYS[4], '*', 'op', 'node_down', 'a', args, 'o', ARGV[2], 'q', '0')
end
return stale
"""

# Append an operation, unless the log is not the one this process follows (store emptied).
# KEYS meta log; ARGV epoch field value...
APPEND = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""

# Store a snapshot newer than the newest, keep `keep` of them, and trim the log below both the
# oldest snapshot kept and the lowest id a live node has applied.
# KEYS meta snaps nodes applied log; ARGV prefix epoch id keep field value...
SAVE = _LUA_HELPERS + """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
local head = redis.call('LINDEX', KEYS[2], 0)
if head and not id_less(head, ARGV[3]) then return 0 end
local snap = {}
for i = 5, #ARGV do snap[#snap + 1] = ARGV[i] end
redis.call('HSET', ARGV[1] .. 'snap:' .. ARGV[3], unpack(snap))
redis.call('LPUSH', KEYS[2], ARGV[3])
while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[4]) do
  redis.call('DEL', ARGV[1] .. 'snap:' .. redis.call('RPOP', KEYS[2]))
end
local floor = redis.call('LINDEX', KEYS[2], -1)
local applied = redis.call('HGETALL', KEYS[4])
for i = 1, #applied, 2 do
  if redis.call('ZSCORE', KEYS[3], applied[i]) and id_less(applied[i + 1], floor) then
    floor = applied[i + 1]
  end
end
redis.call('XTRIM', KEYS[5], 'MINID', floor)
return 1
"""


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that fails fast: no silent retries, so a lost store is noticed within `timeout_s`."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                   retry=Retry(NoBackoff(), 0), health_check_interval=0)


class Store:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._seed = client.register_script(SEED)
        self._join = client.register_script(JOIN)
        self._beat = client.register_script(BEAT)
        self._append = client.register_script(APPEND)
        self._save = client.register_script(SAVE)

    async def meta(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in (await self.client.hgetall(META)).items()}

    async def seed(self, epoch: str, base: str, marker: str, nodes: list[str],
                   snapshot: dict[str, str | bytes]) -> bool:
        import json
        flat = [item for pair in snapshot.items() for item in pair]
        return bool(await self._seed(keys=[META, LOG, SNAPS, NODES, APPLIED],
                                     args=[PREFIX, epoch, base, marker, json.dumps(nodes), *flat]))

    async def join(self, node: str) -> tuple[str, str, dict[bytes, bytes]] | None:
        reply = await self._join(keys=[META, SNAPS, NODES, APPLIED], args=[PREFIX, node])
        if reply is None:
            return None
        epoch, snap_id, flat = reply
        return epoch.decode(), snap_id.decode(), dict(zip(flat[::2], flat[1::2], strict=True))

    async def beat(self, epoch: str, node: str, applied: str, timeout_ms: int) -> list[str] | None:
        reaped = await self._beat(keys=[META, NODES, APPLIED, LOG], args=[epoch, node, applied, timeout_ms])
        return None if reaped is None else [n.decode() for n in reaped]

    async def append(self, epoch: str, fields: dict[str, Any]) -> str | None:
        flat = [item for pair in fields.items() for item in pair]
        entry_id = await self._append(keys=[META, LOG], args=[epoch, *flat])
        return None if entry_id is None else entry_id.decode()

    async def save(self, epoch: str, snap_id: str, keep: int, snapshot: dict[str, str | bytes]) -> bool:
        flat = [item for pair in snapshot.items() for item in pair]
        return bool(await self._save(keys=[META, SNAPS, NODES, APPLIED, LOG],
                                     args=[PREFIX, epoch, snap_id, keep, *flat]))

    async def has_entry(self, entry_id: str) -> bool:
        return bool(await self.client.xrange(LOG, entry_id, entry_id, count=1))

    async def read(self, after: str, count: int,
                   block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self.client.xread({LOG: after}, count=count, block=block_ms)
        return reply[0][1] if reply else []

    async def take_snapshot_turn(self, node: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(SNAPLOCK, node, nx=True, px=ttl_ms))

    @staticmethod
    def data_channel(node: str) -> str:
        return f"{PREFIX}data:{node}"

    async def leave(self, node: str) -> None:
        await self.client.zrem(NODES, node)
        await self.client.hdel(APPLIED, node)

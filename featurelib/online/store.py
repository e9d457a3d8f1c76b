"""The online store: writes of plain rows and aggregation blocks, and one-round-trip reads.

See `featurelib.online.layout` for the key/value layout. Writes are idempotent: plain rows are
written by a Lua script that keeps the newest row (event time, then created time), aggregation
blocks are recomputed from all events they cover and overwritten with one HSET per entity
(atomic per entity), then blocks past the retention are trimmed by a Lua script.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from featurelib.online import layout
from featurelib.online.codec import encode_row, encode_states

KEEP_NEWEST = """
local old = redis.call('GET', KEYS[1])
if (not old) or string.sub(old, 1, 16) <= string.sub(ARGV[1], 1, 16) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

# The same for many rows at once (KEYS[i] <- ARGV[i]): one script call per chunk of rows.
KEEP_NEWEST_MANY = """
local written = 0
for i = 1, #KEYS do
  local old = redis.call('GET', KEYS[i])
  if (not old) or string.sub(old, 1, 16) <= string.sub(ARGV[i], 1, 16) then
    redis.call('SET', KEYS[i], ARGV[i])
    written = written + 1
  end
end
return written
"""
CHUNK = 500  # rows per multi-key script call

# ARGV: pairs of (hop_us, first hop to keep); deletes blocks that end before it.
TRIM = """
local keep = {}
for i = 1, #ARGV, 2 do keep[ARGV[i]] = tonumber(ARGV[i + 1]) end
local removed = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local hop, level, block = string.match(f, '^(%-?%d+):(%d+):(%-?%d+)$')
  local first = keep[hop]
  if first and (tonumber(block) + 1) * (2 ^ tonumber(level)) <= first then
    redis.call('HDEL', KEYS[1], f)
    removed = removed + 1
  end
end
return removed
"""

BATCH = 2000  # commands per pipeline flush when writing


@dataclass
class RedisOnlineStore:
    """Reads and writes featurelib's layout in one Redis database."""

    client: redis.Redis
    project: str
    _scripts: dict[str, Any] = field(default_factory=dict, repr=False)

    def _script(self, name: str, body: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(body)
        return self._scripts[name]

    def write_rows(
        self,
        view: str,
        version: str,
        rows: Iterable[tuple[str, int, int | None, list[Any]]],
    ) -> int:
        """Keep-newest writes of (entity, event_us, created_us, values); returns rows sent.

        On a single Redis, rows go in chunks of `CHUNK` keys per script call; on Redis Cluster
        (keys of different entities live in different slots) one call per key.
        """
        per_key = isinstance(self.client, redis.RedisCluster)
        script = self._script(
            "keep_newest" if per_key else "keep_newest_many",
            KEEP_NEWEST if per_key else KEEP_NEWEST_MANY,
        )
        chunk = 1 if per_key else CHUNK
        sent = 0
        keys: list[bytes] = []
        values_out: list[bytes] = []
        pipe = self.client.pipeline(transaction=False)
        for entity, event_us, created_us, values in rows:
            keys.append(layout.plain_key(self.project, view, version, entity))
            values_out.append(encode_row(event_us, created_us, values))
            sent += 1
            if len(keys) == chunk:
                script(keys=keys, args=values_out, client=pipe)
                keys, values_out = [], []
            if sent % BATCH == 0:
                pipe.execute()
        if keys:
            script(keys=keys, args=values_out, client=pipe)
        pipe.execute()
        return sent

    def write_blocks(
        self,
        view: str,
        version: str,
        blocks: Iterable[tuple[str, list[tuple[bytes, list[Any]]]]],
        keep_from: Sequence[tuple[int, int]] = (),
    ) -> int:
        """Overwrite block fields per entity, atomically, then trim blocks older than
        `keep_from` ((hop_us, first hop kept) pairs). Returns the number of fields written."""
        trim = self._script("trim", TRIM)
        trim_args = [str(v) for pair in keep_from for v in pair]
        written = 0
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for entity, fields in blocks:
            key = layout.aggregation_key(self.project, view, version, entity)
            mapping = {name: encode_states(states) for name, states in fields}
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            if trim_args:
                trim(keys=[key], args=trim_args, client=pipe)
            written += len(mapping)
            pending += len(mapping)
            if pending >= BATCH:
                pipe.execute()
                pending = 0
        pipe.execute()
        return written

    def trim_view(self, view: str, version: str, keep_from: Sequence[tuple[int, int]]) -> int:
        """Trim old blocks of every entity of a view (also those no new event touched)."""
        trim = self._script("trim", TRIM)
        args = [str(v) for pair in keep_from for v in pair]
        pattern = layout.aggregation_key(self.project, view, version, "*")
        pipe = self.client.pipeline(transaction=False)
        removed = 0
        for n, key in enumerate(self.client.scan_iter(match=pattern, count=1000), start=1):
            trim(keys=[key], args=args, client=pipe)
            if n % BATCH == 0:
                removed += sum(pipe.execute())
        removed += sum(pipe.execute())
        return int(removed)

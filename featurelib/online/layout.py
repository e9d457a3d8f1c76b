"""The Redis key/value layout of the online store.

Keys (one per entity and view; `{...}` is the Redis Cluster hash tag, so every view of one
entity value lives in one slot and a read is one pipelined round trip)::

    fl:<project>:v:<view>:<version>:{<entity>}   STRING  a plain view's latest row
    fl:<project>:a:<view>:<version>:{<entity>}   HASH    an aggregation view's tiles and blocks

`<version>` is the view definition's hash (`view.version`): a changed definition never reads
data written under the old one. `<entity>` is the join key values, in entity order, joined by
the unit separator (0x1f); integers in decimal.

Values are compact binary. A plain row is a 16-byte header (event time and created time in
microseconds, big-endian, sign bit flipped so that byte order is time order) followed by one
msgpack array of the feature values in definition order. The header lets a Lua script keep the
newest row without decoding it (writes are idempotent and never go back in time).

An aggregation hash has one field per (hop size, level, block): `<hop_us>:<L>:<b>` holds the
msgpack array of partial-aggregate states of the events in hops [b*2^L, (b+1)*2^L) (level 0 is
one hop: a tile). A read at t needs, per window, the <= 2*log2(W/h) aligned blocks covering
[floor(t,h) - W, floor(t,h)) plus the current tile: a handful of fields fetched with one HMGET.
"""

from __future__ import annotations

from collections.abc import Sequence

SEPARATOR = "\x1f"


def entity_tag(values: Sequence[object]) -> str:
    """The hash-tag text of one entity's join key values."""
    return SEPARATOR.join("" if v is None else str(v) for v in values)


def plain_key(project: str, view: str, version: str, entity: str) -> bytes:
    return f"fl:{project}:v:{view}:{version}:{{{entity}}}".encode()


def aggregation_key(project: str, view: str, version: str, entity: str) -> bytes:
    return f"fl:{project}:a:{view}:{version}:{{{entity}}}".encode()


def materialized_key(project: str, view: str, version: str) -> str:
    """The view's incremental materialization state: the last end written (ISO 8601)."""
    return f"fl:{project}:mat:{view}:{version}"


def block_field(hop_us: int, level: int, block: int) -> bytes:
    return f"{hop_us}:{level}:{block}".encode()


def parse_block_field(field: bytes) -> tuple[int, int, int]:
    hop, level, block = field.decode().split(":")
    return int(hop), int(level), int(block)

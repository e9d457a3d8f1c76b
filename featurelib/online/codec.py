"""Binary encoding of online values: ordered row headers + msgpack payloads."""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

import msgpack

from featurelib.durations import epoch_micros

_HEADER = struct.Struct(">QQ")
_FLIP = 1 << 63
NO_CREATED = -(1 << 63)  # sorts before every real created time
HEADER_SIZE = _HEADER.size


def _ordered(value: int) -> int:
    return (value + _FLIP) & 0xFFFFFFFFFFFFFFFF


def encode_row(event_us: int, created_us: int | None, values: list[Any]) -> bytes:
    """Header (event, created) in byte-comparable form, then the msgpack'd feature values."""
    created = NO_CREATED if created_us is None else created_us
    header = _HEADER.pack(_ordered(event_us), _ordered(created))
    payload: bytes = msgpack.packb([_plain(v) for v in values], use_bin_type=True)
    return header + payload


def decode_row(data: bytes) -> tuple[int, list[Any]]:
    """(event time in microseconds, feature values) of an encoded row."""
    event, _ = _HEADER.unpack_from(data)
    values: list[Any] = msgpack.unpackb(data[HEADER_SIZE:], raw=False)
    return event - _FLIP, values


def encode_states(values: list[Any]) -> bytes:
    packed: bytes = msgpack.packb([_plain(v) for v in values], use_bin_type=True)
    return packed


def decode_states(data: bytes) -> list[Any]:
    values: list[Any] = msgpack.unpackb(data, raw=False)
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_micros(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

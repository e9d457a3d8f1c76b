"""Parsing and canonical formatting of durations such as "5min", "1h", "7d"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from featurelib.errors import DefinitionError

_UNITS = {
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PATTERN = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d|w)\s*$")


def parse_duration(value: str | timedelta, *, where: str) -> timedelta:
    """Turn "90s", "5min", "1h", "7d", "2w" or a timedelta into a positive timedelta."""
    if isinstance(value, timedelta):
        result = value
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise DefinitionError(
                f"cannot read duration {value!r}",
                where=where,
                hint='write a whole number and a unit, e.g. "30s", "5min", "1h", "7d", "2w"',
            )
        result = int(match.group(1)) * _UNITS[match.group(2)]
    if result <= timedelta(0):
        raise DefinitionError(
            f"duration must be positive, got {value!r}", where=where, hint='e.g. "1h"'
        )
    if result % timedelta(seconds=1):
        raise DefinitionError(
            f"duration must be a whole number of seconds, got {value!r}",
            where=where,
            hint="round it to whole seconds, e.g. timedelta(seconds=90)",
        )
    return result


def format_duration(value: timedelta) -> str:
    """The shortest canonical spelling: 7 days -> "7d", 90 minutes -> "90min"."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def to_micros(value: timedelta) -> int:
    """Whole microseconds in `value` (exact, no float rounding)."""
    return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware datetime; a naive one is read as UTC (featurelib's convention)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (`timestamp() * 1e6` is off by one for about
    1% of microsecond times); naive = UTC.

    Examples:
        >>> epoch_micros(datetime(2013, 1, 1, 0, 0, 0, 1))
        1356998400000001
        >>> moment = datetime(2004, 8, 10, 16, 42, 41, 688547, tzinfo=UTC)
        >>> epoch_micros(moment), int(moment.timestamp() * 1_000_000)  # the float is 1 us short
        (1092156161688547, 1092156161688546)
    """
    return to_micros(as_utc(moment) - EPOCH)


def default_hop(window: timedelta) -> timedelta:
    """The default hop of a sawtooth window (design §3): coarser hops for longer windows."""
    if window > timedelta(days=12):
        return timedelta(days=1)
    if window > timedelta(hours=12):
        return timedelta(hours=1)
    if window > timedelta(hours=1):
        return timedelta(minutes=5)
    return timedelta(minutes=1)

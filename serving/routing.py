"""Which model version answers a request, and shadow scoring off the response path.

Champion/challenger: a request goes to the challenger when the stable hash of its entity key
values falls below `share`, so one entity always gets the same version (sticky) as long as the
split does not change, on every replica and after restarts. The hash is blake2b of the key values
(Python's `hash` is salted per process, so it is never used). A request with several rows is
routed as a whole by its *first* row's keys: one response, one answering version.

Overrides (in this order): a version pinned in the path (`/v2/models/m/versions/3/infer`), then
the override header (`X-Model-Version: 3`, or an alias such as `challenger`), then the split.

Shadow: `ShadowPool.submit` runs a scoring in a small thread pool after the response was built;
when `max_concurrent` scorings are already in flight the new one is dropped (and counted), so a
slow shadow model can never queue up memory or delay live traffic.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("featurelib.serve")

_SCALE = float(1 << 64)
SEPARATOR = "\x1f"  # unit separator: cannot occur in ordinary key values


def key_fraction(values: Sequence[Any], person: bytes = b"fl-route") -> float:
    """A stable number in [0, 1) for entity key values (same on every process and machine);
    each use (`person`) gets its own independent hash of the same keys.

    >>> key_fraction(["UA", "EWR"]) == key_fraction(["UA", "EWR"])
    True
    >>> 0.0 <= key_fraction(["UA", "EWR"]) < 1.0
    True
    """
    text = SEPARATOR.join("" if v is None else str(v) for v in values)
    # Personalized: independent of the feature log's sampling hash over the same keys, so a
    # logged sample holds champion and challenger traffic in their routed proportions.
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class Route:
    """The version chosen for a request and why (`arm`: champion, challenger, pinned,
    override)."""

    version: int
    arm: str


@dataclass(frozen=True)
class Router:
    """Champion/challenger split of entity keys (see the module docstring)."""

    champion: int
    challenger: int | None = None
    share: float = 0.0

    def route(self, key_values: Sequence[Any]) -> Route:
        """The version answering a request whose first row has `key_values`."""
        if self.challenger is None or self.share <= 0.0 or self.challenger == self.champion:
            return Route(self.champion, "champion")
        if key_fraction(key_values) < self.share:
            return Route(self.challenger, "challenger")
        return Route(self.champion, "champion")


class ShadowPool:
    """Bounded, sampled background scoring (see the module docstring)."""

    def __init__(
        self,
        max_concurrent: int,
        sample_rate: float = 1.0,
        *,
        on_drop: Callable[[], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="featurelib-shadow")
        self._on_drop = on_drop
        self._random = random.Random(seed)
        self._closed = False

    def sampled(self) -> bool:
        """Whether this request is shadowed (decided before any shadow work is prepared)."""
        return not self._closed and self._random.random() < self.sample_rate

    def submit(self, work: Callable[[], None]) -> bool:
        """Run `work` in the background if a slot is free; False when dropped."""
        if self._closed or not self._slots.acquire(blocking=False):
            if self._on_drop is not None:
                self._on_drop()
            return False

        def run() -> None:
            try:
                work()
            except Exception:  # a shadow failure must never reach live traffic
                log.exception("shadow scoring failed")
            finally:
                self._slots.release()

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down between the check and the submit
            self._slots.release()
            return False
        return True

    def close(self, wait: bool = True) -> None:
        """Stop accepting work; with `wait`, let the scorings in flight finish."""
        self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=not wait)

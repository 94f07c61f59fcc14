"""Bounded, in-process rate limiting for edges that must not be used to flood something behind them."""

from __future__ import annotations

from collections import OrderedDict, deque


class SlidingWindowLimiter:
    """At most ``limit`` events per key in any ``window_s``; remembers at most ``max_keys`` keys (the
    least recently seen is forgotten first), so its memory is bounded whoever calls it."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 1) -> None:
        assert limit > 0 and window_s > 0 and max_keys > 0
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Count one event for ``key`` at ``now`` if it is within the limit; False (not counted) if not."""
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._events.popitem(last=False)
            events = self._events[key] = deque()
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def retry_after_s(self, key: str, now: float) -> int:
        """Whole seconds until ``key`` may have another event (at least 1)."""
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 1
        return max(1, int(events[0] + self.window_s - now + 0.999))

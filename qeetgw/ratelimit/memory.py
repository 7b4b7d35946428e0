"""
The in-memory store: one process's counters, bounded.

Memory stays bounded whatever clients do: windows that have ended are
dropped as new hits arrive (the dictionary is kept in the order windows
end, so the sweep looks only at its front), and at most C{max_keys} keys are
kept.  At the cap, the key whose window ends soonest is dropped to make room:
a flood of distinct (spoofed) keys can therefore end an old window early —
that client gets a fresh budget — but cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from qeetgw.ratelimit.store import Algorithm, Budget, Count, IRateLimitStore, StoreState

#: (window start or aligned window index, hits in it, hits in the previous one)
_Entry = Tuple[int, int, int]


@implementer(IRateLimitStore)
class MemoryStore(Service):
    """
    Counters in this process's memory (RATE_LIMIT_STORE=memory).

    @param clock: the clock windows are measured with.
    @param max_keys: the most keys kept at once (RATE_LIMIT_MEMORY_MAX_KEYS).
    """

    name = "rate-limit-store"

    def __init__(self, clock: IReactorTime, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> entry, in the order the entries' windows end; one window
        # length per budget, so one ordered dict per budget keeps that order.
        self._budgets: Dict[Tuple[str, int, str], "OrderedDict[str, _Entry]"] = {}
        self.evicted = 0

    def _entries(self, budget: Budget, algorithm: Algorithm) -> "OrderedDict[str, _Entry]":
        slot = (budget.name, budget.window_ms, algorithm)
        entries = self._budgets.get(slot)
        if entries is None:
            entries = self._budgets[slot] = OrderedDict()
        return entries

    def _size(self) -> int:
        return sum(len(entries) for entries in self._budgets.values())

    def hit(self, key: str, budget: Budget, algorithm: Algorithm) -> "Deferred[Count]":
        """
        Count a hit; never fails.
        """
        now = int(self._clock.seconds() * 1000)
        entries = self._entries(budget, algorithm)
        window = budget.window_ms
        if algorithm == "fixed":
            count = self._hit_fixed(entries, key, now, window)
        else:
            count = self._hit_sliding(entries, key, now, window)
        return succeed(count)

    def _hit_fixed(self, entries: "OrderedDict[str, _Entry]", key: str, now: int, window: int) -> Count:
        # Windows that ended are at the front: drop them.
        while entries:
            first_key, (first_start, _, _) = next(iter(entries.items()))
            if first_start + window > now:
                break
            del entries[first_key]
        entry = entries.get(key)
        if entry is None:
            self._make_room()
            start, hits = now, 1
        else:
            start, hits = entry[0], entry[1] + 1
        entries[key] = (start, hits, 0)
        return Count(current=hits, previous=0, elapsed_ms=now - start, window_ms=window)

    def _hit_sliding(self, entries: "OrderedDict[str, _Entry]", key: str, now: int, window: int) -> Count:
        index = now // window
        # An entry two windows old says nothing about the last window.
        while entries:
            first_key, (first_index, _, _) = next(iter(entries.items()))
            if first_index >= index - 1:
                break
            del entries[first_key]
        entry = entries.pop(key, None)
        if entry is None:
            self._make_room()
            current, previous = 1, 0
        elif entry[0] == index:
            current, previous = entry[1] + 1, entry[2]
        else:  # the previous window: its hits become the weighted ones
            current, previous = 1, entry[1]
        entries[key] = (index, current, previous)
        return Count(current=current, previous=previous, elapsed_ms=now % window, window_ms=window)

    def _make_room(self) -> None:
        """
        Drop the entry whose window ends soonest when the cap is reached.
        """
        if self._size() < self._max_keys:
            return
        def first_end(slot: Tuple[str, int, str]) -> int:
            _, window, algorithm = slot
            first = next(iter(self._budgets[slot].values()))[0]
            return first + window if algorithm == "fixed" else (first + 1) * window

        soonest = min((slot for slot, entries in self._budgets.items() if entries), key=first_end)
        self._budgets[soonest].popitem(last=False)
        self.evicted += 1

    def state(self) -> StoreState:
        """
        Always counting; the detail says how many keys it holds.
        """
        size = self._size()
        return StoreState("memory", True, f"{size} key" if size == 1 else f"{size} keys")

    def startService(self) -> None:
        """
        Nothing runs in the background: expired windows go as hits arrive.
        """
        super().startService()

    def stopService(self) -> "Deferred[None]":
        """
        Nothing to stop.
        """
        super().stopService()
        return succeed(None)

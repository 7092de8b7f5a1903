"""The in-memory resource store: one shared chunk list per resource, limits, eviction and expiry.

Readers never copy: every reader of a resource walks the same list of immutable `bytes` chunks
with its own index, so a hundred readers cost a hundred integers, not a hundred buffers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from .settings import Settings
from .stats import Stats

# Bookkeeping charged per stored chunk on top of its payload (bytes object header plus list
# slot), so that a writer trickling 1-byte chunks cannot store 40x more than the limit says.
CHUNK_OVERHEAD = 64
# Likewise per resource (object, chunk list, reader set, index entries) plus its key, so that
# millions of empty uploads are bounded by max_total_bytes too.
RESOURCE_OVERHEAD = 1024


class Reader(Protocol):
    def pump(self) -> None: ...  # new chunks (or completion) are available
    def abort(self) -> None: ...  # the resource failed or went away: abort the transfer


class Waiter(Protocol):
    def created(self, resource: Resource) -> None: ...


def namespace_of(key: str) -> str:
    """`/<session>/<user>/...` -> `/<session>/<user>/`; shorter paths are their own namespace."""
    path = key.split("?", 1)[0]
    first = path.find("/", 1)
    if first < 0:
        return path
    second = path.find("/", first + 1)
    return path[:second + 1] if second >= 0 else path[:first + 1]


def session_of(key: str) -> str:
    path = key.split("?", 1)[0]
    first = path.find("/", 1)
    return path[1:first] if first >= 0 else path[1:]


class Resource:
    """One uploaded object; `chunks` only ever grows, and is shared by all its readers."""

    __slots__ = ("charged", "chunks", "complete", "content_type", "detached", "failed", "key",
                 "readers", "size")

    def __init__(self, key: str, content_type: str):
        self.key = key
        self.content_type = content_type
        self.chunks: list[bytes] = []
        self.size = 0
        self.charged = 0
        self.complete = False
        self.failed = False  # writer died, or the resource was deleted/evicted mid-way
        self.detached = False  # no longer reachable through the store
        self.readers: set[Reader] = set()

    def _notify(self) -> None:
        for reader in tuple(self.readers):
            reader.pump()

    def _abort_readers(self) -> None:
        readers, self.readers = self.readers, set()
        for reader in readers:
            reader.abort()


class Store:
    """All resources of the relay, indexed by request path plus query string."""

    def __init__(self, settings: Settings, stats: Stats):
        self.settings = settings
        self.stats = stats
        self.resources: dict[str, Resource] = {}
        self.completed: OrderedDict[str, Resource] = OrderedDict()  # eviction order: oldest first
        self.namespaces: dict[str, set[str]] = {}
        self.activity: dict[str, float] = {}  # namespace -> last write (monotonic)
        self.waiters: dict[str, set[Waiter]] = {}
        self.total = 0  # charged bytes of indexed resources

    # --- queries -------------------------------------------------------------------------
    def get(self, key: str) -> Resource | None:
        return self.resources.get(key)

    @property
    def waiter_count(self) -> int:
        return sum(len(w) for w in self.waiters.values())

    # --- writers -------------------------------------------------------------------------
    def create(self, key: str, content_type: str) -> Resource | None:
        """Create (or replace) `key` and wake everybody long-polling for it; None if full."""
        old = self.resources.get(key)
        if old is not None:
            # A complete old version stays readable by those already streaming it; an
            # unfinished one can never be completed consistently, so its readers are aborted.
            self._remove(old, abort=not old.complete)
        cost = RESOURCE_OVERHEAD + len(key) + len(content_type)
        if not self._make_room(cost):
            return None
        res = Resource(key, content_type)
        res.charged = cost
        self.total += cost
        ns = namespace_of(key)
        self.resources[key] = res
        self.namespaces.setdefault(ns, set()).add(key)
        self.activity[ns] = time.monotonic()
        for waiter in self.waiters.pop(key, ()):
            waiter.created(res)
        return res

    def append(self, res: Resource, data: bytes) -> int:
        """Store one piece of an upload; returns 0, or the HTTP status that ends the upload."""
        if res.failed:
            return 0  # detached mid-upload: the rest of the body is drained and dropped
        if res.size + len(data) > self.settings.max_resource_bytes:
            return 413
        cost = len(data) + CHUNK_OVERHEAD
        if not self._make_room(cost):
            return 507
        res.chunks.append(data)
        res.size += len(data)
        res.charged += cost
        self.total += cost
        self.stats.bytes_in += len(data)
        self.stats.chunks_in += 1
        self.activity[namespace_of(res.key)] = time.monotonic()
        if res.readers:
            res._notify()
        return 0

    def complete(self, res: Resource) -> bool:
        """Mark an upload finished; False if it was replaced or deleted in the meantime."""
        if res.failed:
            return False
        res.complete = True
        self.completed[res.key] = res
        self.activity[namespace_of(res.key)] = time.monotonic()
        res._notify()
        return True

    def fail(self, res: Resource) -> None:
        """The writer went away mid-upload: readers see an aborted transfer, never a short one."""
        if res.complete or res.failed:
            return
        self.stats.aborted_uploads += 1
        self._remove(res, abort=True)
        res.failed = True
        res._abort_readers()

    # --- removal -------------------------------------------------------------------------
    def delete(self, key: str) -> int:
        """Delete `key`, or every key with the given prefix if it ends in `*`; returns the count."""
        path, sep, _ = key.partition("?")
        if path.endswith("*") and not sep:
            prefix = path[:-1]
            victims = [r for k, r in self.resources.items() if k.startswith(prefix)]
        else:
            victims = [self.resources[key]] if key in self.resources else []
        for res in victims:
            self._remove(res, abort=True)
        return len(victims)

    def expire(self, now: float) -> int:
        """Drop every namespace whose writer has been silent for idle_ttl_s."""
        ttl = self.settings.idle_ttl_s
        stale = [ns for ns, t in self.activity.items() if now - t > ttl]
        count = 0
        for ns in stale:
            for key in list(self.namespaces.get(ns, ())):
                self._remove(self.resources[key], abort=True)
                count += 1
            self.activity.pop(ns, None)
        self.stats.expired += count
        return count

    def clear(self) -> None:
        for res in list(self.resources.values()):
            self._remove(res, abort=True)

    def _make_room(self, cost: int) -> bool:
        limit = self.settings.max_total_bytes
        while self.total + cost > limit and self.completed:
            _, victim = self.completed.popitem(last=False)
            self._remove(victim, abort=True)
            self.stats.evictions += 1
        return self.total + cost <= limit

    def _remove(self, res: Resource, abort: bool) -> None:
        if res.detached:
            return
        res.detached = True
        del self.resources[res.key]
        self.completed.pop(res.key, None)
        ns = namespace_of(res.key)
        keys = self.namespaces.get(ns)
        if keys is not None:
            keys.discard(res.key)
            if not keys:
                del self.namespaces[ns]
                self.activity.pop(ns, None)
        self.total -= res.charged
        if abort:
            if not res.complete:
                res.failed = True
            res._abort_readers()

    # --- long-poll -------------------------------------------------------------------------
    def wait(self, key: str, waiter: Waiter) -> None:
        self.waiters.setdefault(key, set()).add(waiter)

    def unwait(self, key: str, waiter: Waiter) -> None:
        waiters = self.waiters.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self.waiters[key]

    def keys(self) -> Iterable[str]:
        return self.resources.keys()

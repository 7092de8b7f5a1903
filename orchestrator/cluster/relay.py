"""Data frames (SendData) for users connected to other processes: Redis pub/sub, not the log.

The sender's process routes from its replica and publishes one message per destination process
(codec.encode_frame: a small JSON header naming the recipients, then the raw payload). What waits
to be published is bounded per destination by the per-recipient data budget (data_queue_frames,
data_queue_bytes): when Redis is slow or gone the oldest frames are dropped and counted
(data_dropped "cluster_backlog" / "cluster_unavailable"), never queued without limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..protocol import Ev
from . import codec
from .store import Store

if TYPE_CHECKING:
    from ..server import App

log = logging.getLogger("orchestrator.cluster")


class Relay:
    def __init__(self, app: App, store: Store, node_id: str, retry_s: float,
                 on_confirm: Callable[[str, int], None]) -> None:
        self.app, self.store, self.node_id, self.retry_s = app, store, node_id, retry_s
        self.on_confirm = on_confirm
        self._outbox: dict[str, collections.deque[bytes]] = {}  # destination node -> messages
        self._outbox_bytes: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.forwarded = 0
        self.received = 0
        self.subscribed = False  # frames for this process can arrive (readiness)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publish_loop()), loop.create_task(self._subscribe_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task

    def forward(self, recipients: list[str], sender_id: str, kind: str, payload: bytes | str) -> None:
        """Queue one message per destination process (called on the SendData hot path: no await)."""
        users = self.app.model.users
        by_node: dict[str, list[str]] = {}
        for user_id in recipients:
            user = users.get(user_id)
            if user is not None and user.node and user.node != self.node_id:
                by_node.setdefault(user.node, []).append(user_id)
        settings, dropped = self.app.settings, self.app.stats.data_dropped
        for node, to in by_node.items():
            message = codec.data_frame(to, sender_id, kind, payload)
            box = self._outbox.setdefault(node, collections.deque())
            size = self._outbox_bytes.get(node, 0)
            while box and (len(box) >= settings.data_queue_frames
                           or size + len(message) > settings.data_queue_bytes):
                size -= len(box.popleft())
                dropped["cluster_backlog"] += 1
            box.append(message)
            self._outbox_bytes[node] = size + len(message)
        if by_node:
            self._wake.set()

    async def _publish_loop(self) -> None:
        """Publish everything waiting in one pipelined round trip per wake-up."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = [(node, list(box)) for node, box in self._outbox.items() if box]
            self._outbox.clear()
            self._outbox_bytes.clear()
            pipe = self.store.client.pipeline(transaction=False)
            frames = 0
            for node, messages in batch:
                channel = Store.data_channel(node)
                for message in messages:
                    pipe.publish(channel, message)
                frames += len(messages)
            try:
                await pipe.execute()
                self.forwarded += frames
            except (RedisError, OSError) as exc:
                self.app.stats.data_dropped["cluster_unavailable"] += frames
                log.debug("relay: %d frame(s) dropped: %s", frames, exc)

    async def _subscribe_loop(self) -> None:
        channel = Store.data_channel(self.node_id)
        while True:
            pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.subscribed = True
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                log.debug("relay subscription lost: %s", exc)
            finally:
                self.subscribed = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(self.retry_s)

    async def confirm(self, origin: str, seq: int) -> None:
        """Tell `origin` that its entry `seq` was applied here (not dropped like data: it is tiny)."""
        with contextlib.suppress(RedisError, OSError):
            message = codec.confirm_frame(self.node_id, seq)
            await self.store.client.publish(Store.data_channel(origin), message)

    def _deliver(self, message: Any) -> None:
        try:
            header, payload = codec.decode_frame(message)
            if "c" in header:
                self.on_confirm(str(header["n"]), int(header["c"]))
                return
            recipients, sender_id, kind = list(header["r"]), str(header["s"]), str(header["k"])
        except (ValueError, KeyError, TypeError):
            self.app.stats.data_dropped["cluster_malformed"] += 1
            return
        self.received += 1
        self.app.delivery.send_data(recipients, Ev.DATA_RECEIVED, (sender_id, kind, payload), len(payload))

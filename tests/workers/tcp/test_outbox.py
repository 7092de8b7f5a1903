"""The per-receiver backlog: limits, drop policies, priority and turn-taking (pure data structure)."""

from __future__ import annotations

from workers.tcp.outbox import Frame, Outbox
from workers.tcp.settings import QueueSettings
from workers.tcp.stats import DROP_REASONS


def frame(stream: str, seq: int, size: int = 100, prio: bool = False) -> Frame:
    return Frame([b"x" * size], size, stream, prio, float(seq))


def make(**limits: object) -> tuple[Outbox, dict[str, int]]:
    drops = dict.fromkeys(DROP_REASONS, 0)
    return Outbox(QueueSettings(**limits), drops), drops  # type: ignore[arg-type]


def drain(box: Outbox) -> list[tuple[str, int]]:
    out = []
    while (f := box.pop()) is not None:
        out.append((f.stream, int(f.t_read)))
    assert box.frames == 0 and box.nbytes == 0
    return out


def test_drop_oldest_keeps_the_latest_frames() -> None:
    box, drops = make(frames=3)
    for seq in range(10):
        box.push(frame("a/pointcloud/0", seq))
    assert (box.frames, box.nbytes, drops["queue_frames"], box.dropped) == (3, 300, 7, 7)
    assert drain(box) == [("a/pointcloud/0", 7), ("a/pointcloud/0", 8), ("a/pointcloud/0", 9)]


def test_drop_newest_keeps_the_first_frames() -> None:
    box, drops = make(frames=3, drop="newest")
    for seq in range(10):
        box.push(frame("a/pointcloud/0", seq))
    assert drops["queue_frames"] == 7
    assert [seq for _, seq in drain(box)] == [0, 1, 2]


def test_byte_limit_and_oversized_frames() -> None:
    box, drops = make(frames=100, bytes=250)
    for seq in range(4):
        box.push(frame("a/pointcloud/0", seq, size=100))
    box.push(frame("a/pointcloud/0", 9, size=251))  # can never fit
    assert drops["queue_bytes"] == 3 and box.nbytes == 200
    assert [seq for _, seq in drain(box)] == [2, 3]


def test_limits_are_per_stream() -> None:
    box, drops = make(frames=2)
    for seq in range(3):
        box.push(frame("a/pointcloud/0", seq))
        box.push(frame("b/pointcloud/0", seq))
    assert drops["queue_frames"] == 2 and box.frames == 4


def test_priority_first_then_turns() -> None:
    box, _ = make()
    for seq in range(3):
        box.push(frame("a/pointcloud/0", seq))
        box.push(frame("b/pointcloud/0", seq))
        box.push(frame("a/audio/0", seq, prio=True))
    order = drain(box)
    assert order[:3] == [("a/audio/0", 0), ("a/audio/0", 1), ("a/audio/0", 2)]
    assert order[3:] == [("a/pointcloud/0", 0), ("b/pointcloud/0", 0), ("a/pointcloud/0", 1),
                         ("b/pointcloud/0", 1), ("a/pointcloud/0", 2), ("b/pointcloud/0", 2)]


def test_stream_count_is_bounded() -> None:
    box, drops = make(streams=2)
    for name in ("a", "b", "c", "d"):
        box.push(frame(f"{name}/pointcloud/0", 0))
    assert drops["streams"] == 2 and box.frames == 2
    box.pop()
    box.push(frame("c/pointcloud/0", 1))  # an emptied stream frees its slot
    assert box.frames == 2 and drops["streams"] == 2


def test_clear_counts_what_was_queued() -> None:
    box, drops = make()
    for seq in range(4):
        box.push(frame("a/pointcloud/0", seq))
    box.clear("disconnect")
    assert drops["disconnect"] == 4 and box.frames == 0 and box.pop() is None

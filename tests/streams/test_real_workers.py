"""The real workers (python -m workers.tcp/dash/webrtc) run through the supervisor from the shipped config."""

import asyncio
from urllib.parse import urlsplit

import aiohttp


def frame(stream: str, payload: bytes, ts: int = 1) -> bytes:
    head = f"2,{stream},{ts},{len(payload)},"
    return (head + "0" * (127 - len(head)) + "\n").encode() + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    header = await asyncio.wait_for(reader.readexactly(128), 10)
    fields = header.decode().split(",")
    return fields[1], await asyncio.wait_for(reader.readexactly(int(fields[3])), 10)


async def connections(http: aiohttp.ClientSession, control_port: int, n: int) -> None:
    """Wait until the reflector has registered n clients (its /stats is the only signal)."""
    for _ in range(200):
        async with http.get(f"http://127.0.0.1:{control_port}/stats") as r:
            if (await r.json())["connections"] == n:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"reflector on control port {control_port} never had {n} connections")


async def test_tcpreflector_sessions_get_own_ports_and_never_see_each_other(h, tmp_path, supervisor):
    sup = await supervisor(h.shipped_with_free_ports(tmp_path))
    a = await sup.acquire("A", "tcpreflector")
    b = await sup.acquire("B", "tcpreflector")
    assert a.port != b.port
    urls = {s: sup.sfu_data(s, "u1", "127.0.0.1")["url_gen"] for s in "AB"}
    assert urls["A"] == sup.sfu_data("A", "u2", "127.0.0.1")["url_gen"] == f"tcp://127.0.0.1:{a.port}"
    peers = {}
    for s in "AB":
        u = urlsplit(urls[s])
        peers[s] = [await asyncio.open_connection(u.hostname, u.port) for _ in range(2)]
    control = {w["name"]: w["control_port"] for w in sup.snapshot()["workers"]}
    async with aiohttp.ClientSession() as http:
        await connections(http, control[a.worker], 2)
        await connections(http, control[b.worker], 2)

    def reported(worker: str) -> int | None:
        stats = next(w["stats"] for w in sup.snapshot()["workers"] if w["name"] == worker)
        return (stats or {}).get("connections")
    assert await sup.wait_until(lambda: reported(a.worker) == 2, 10)  # the worker's /stats, in the snapshot
    fa, fb = frame("u1/pointcloud/0", b"A" * 1000), frame("u1/audio/0", b"B" * 10)
    peers["A"][0][1].write(fa)
    peers["B"][0][1].write(fb)
    assert await read_frame(peers["A"][1][0]) == ("u1/pointcloud/0", b"A" * 1000)
    assert await read_frame(peers["B"][1][0]) == ("u1/audio/0", b"B" * 10)  # B's first frame is B's own
    peers["A"][1][1].write(frame("u2/audio/0", b"reply"))
    assert await read_frame(peers["A"][0][0]) == ("u2/audio/0", b"reply")
    for pair in peers.values():
        for _, writer in pair:
            writer.close()


async def test_dash_and_webrtc_urls_reach_live_workers(h, tmp_path, supervisor):
    sup = await supervisor(h.shipped_with_free_ports(tmp_path))
    dash = await sup.acquire("S1", "dash")
    other = await sup.acquire("S2", "dash")
    assert dash.worker == other.worker  # one relay serves many sessions
    webrtc = await sup.acquire("S1w", "webrtc")
    du = sup.sfu_data("S1", "alice", "127.0.0.1")["url_gen"]
    assert du == f"http://127.0.0.1:{dash.port}/S1/alice/"
    assert sup.sfu_data("S1", "bob", "127.0.0.1")["url_gen"].endswith("/S1/bob/")
    wu = sup.sfu_data("S1w", "alice", "127.0.0.1")["url_gen"]
    assert wu == f"http://127.0.0.1:{webrtc.port}/" == sup.sfu_data("S1w", "bob", "127.0.0.1")["url_gen"]
    async with aiohttp.ClientSession() as http:
        async with http.put(du + "audio/audio.mpd", data=b"<MPD/>") as r:
            assert r.status == 200
        async with http.get(du + "audio/audio.mpd") as r:
            assert r.status == 200 and await r.read() == b"<MPD/>"
        async with http.get(wu) as r:
            assert r.status == 200
    snap = {w["kind"]: w for w in sup.snapshot()["workers"] if w["sessions"]}
    assert snap["webrtc"]["udp_ports"] in ([41000, 41009], [41010, 41019])
    assert snap["dash"]["health"]["status"] == "ok"

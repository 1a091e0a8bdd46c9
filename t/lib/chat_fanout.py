#!/usr/bin/python3
"""Chat fan-out measure: N receivers in one room, one sender sends M
messages (text = send time); prints deliveries/s and latency percentiles
as JSON.  python3-websockets, asyncio; 127.0.0.1 only.

    chat_fanout.py PORT PATH COOKIE N M
"""

import asyncio
import json
import sys
import time

import websockets


async def receiver(url, headers, m, ready, lat, done):
    async with websockets.connect(url, extra_headers=headers,
                                  max_size=None, ping_interval=None) as ws:
        json.loads(await ws.recv())          # welcome
        ready.release()
        got = 0
        while got < m:
            msg = json.loads(await ws.recv())
            if msg.get("type") != "message":
                continue
            got += 1
            lat.append(time.monotonic() - float(msg["text"]))
        done.append(time.monotonic())


async def main():
    port, path, cookie, n, m = sys.argv[1:6]
    n, m = int(n), int(m)
    url = f"ws://127.0.0.1:{port}{path}"
    headers = {"Cookie": f"platform_session={cookie}"}
    ready = asyncio.Semaphore(0)
    lat, done = [], []

    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(
            receiver(url, headers, m, ready, lat, done)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    for _ in range(n):
        await ready.acquire()

    async with websockets.connect(url, extra_headers=headers,
                                  ping_interval=None) as s:
        json.loads(await s.recv())
        start = time.monotonic()
        for _ in range(m):
            await s.send(json.dumps({"type": "message",
                                     "text": repr(time.monotonic())}))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    end = max(done)
    lat.sort()
    print(json.dumps({
        "clients": n, "messages": m, "deliveries": len(lat),
        "seconds": round(end - start, 3),
        "deliveries_per_s": round(len(lat) / (end - start)),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2)}))


asyncio.run(main())

#!/usr/bin/python3
"""ws_interop.py BASE: Debian's python3-websockets against platform_websocket.

BASE is ws://127.0.0.1:PORT; the script uses BASE/ws (echo), BASE/ws-keep
(short ping interval and idle timeout) and BASE/ws-small (1000-byte limit)
and prints one JSON object of what it saw; t/81-websocket-interop.t judges
it.  The client offers permessage-deflate (its default), which the server
does not take.  Bounded: every step has a timeout.
"""

import asyncio
import json
import os
import sys

import websockets
from websockets.exceptions import ConnectionClosed


async def echo(ws, message):
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), 10)


async def run(base):
    res = {"version": websockets.__version__}

    async with websockets.connect(base + "/ws", open_timeout=10,
                                  close_timeout=5) as ws:
        res["extensions"] = [e.name for e in ws.extensions]

        res["text"] = await echo(ws, "h\u00e9llo w\u00f6rld \u2603 \U0001f600")

        data = os.urandom(60 * 1024)
        got = await echo(ws, data)
        res["binary_60k"] = isinstance(got, bytes) and got == data

        # an iterable is sent as one fragmented message
        res["fragmented_text"] = await echo(ws, ["frag", "ment", "ed \u2713"])
        parts = [b"\x00\x01", b"\x02" * 30000, b"\x03"]
        got = await echo(ws, parts)
        res["fragmented_binary"] = got == b"".join(parts)

        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        res["ping"] = True

        burst = ["m%d" % i for i in range(200)]
        for m in burst:
            await ws.send(m)
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in burst]
        res["burst_in_order"] = got == burst

    res["close_code"] = ws.close_code

    # the library answers the server's pings by itself: an idle client
    # outlives the idle timeout
    async with websockets.connect(base + "/ws-keep", ping_interval=None,
                                  open_timeout=10) as ws:
        await asyncio.sleep(1.5)
        res["kept_alive"] = await echo(ws, "after 1.5 s") == "after 1.5 s"

    async with websockets.connect(base + "/ws-small", open_timeout=10) as ws:
        await ws.send(b"x" * 1001)
        try:
            await asyncio.wait_for(ws.recv(), 10)
            res["too_big"] = None
        except ConnectionClosed as e:
            res["too_big"] = e.code

    print(json.dumps(res))


def main():
    if len(sys.argv) != 2:
        print("usage: ws_interop.py ws://127.0.0.1:PORT", file=sys.stderr)
        return 2

    asyncio.run(asyncio.wait_for(run(sys.argv[1]), 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())

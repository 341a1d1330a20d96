#!/usr/bin/env python3
"""Resident memory of a proxy holding many idle keep-alive connections.

    bench/idle_conns.py PID HOST:PORT PATH [COOKIE] [CONNECTIONS]

Opens CONNECTIONS (default 10000) HTTP/1.1 connections to HOST:PORT, sends
one GET PATH on each (with COOKIE, if given) and reads the whole answer, so
every connection has served a request and sits idle in keep-alive. Then
reads VmRSS of PID (the proxy), and prints RSS before, with the connections
open, and the bytes per connection. The proxy's keep-alive and header-read
timeouts must exceed the time this takes (a minute at most).

Needs an open-file limit above CONNECTIONS (ulimit -n) for this process and
the proxy. Loopback only; every connection is closed on exit.
"""

import asyncio
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one(host, port, request):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status, writer


async def main():
    pid = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    path = sys.argv[3]
    cookie = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if cookie:
        request += f"Cookie: {cookie}\r\n"
    request = (request + "\r\n").encode()

    before = rss_kib(pid)
    writers, statuses = [], {}
    batch = 200
    for start in range(0, count, batch):
        done = await asyncio.gather(
            *(one(host, port, request) for _ in range(min(batch, count - start)))
        )
        for status, writer in done:
            statuses[status] = statuses.get(status, 0) + 1
            writers.append(writer)
    await asyncio.sleep(2)  # let the proxy settle (pooled upstream conns, frees)
    during = rss_kib(pid)
    print(f"statuses: {statuses}")
    print(f"RSS before: {before / 1024:.1f} MiB")
    print(f"RSS with {count} idle keep-alive connections: {during / 1024:.1f} MiB")
    print(f"per connection: {(during - before) * 1024 / count:.0f} bytes")
    for writer in writers:
        writer.close()


asyncio.run(main())

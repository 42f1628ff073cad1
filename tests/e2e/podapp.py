"""The application the e2e pods run (as `python podapp.py --http 8080 --echo 9000`).

- HTTP on `--http`: any GET answers JSON `{"client": "ip:port", "server": "ip:port", "path": ...}`,
  so a test sees which address the application saw (ztunnel keeps the client's IP);
- TCP echo on `--echo`: echoes every byte until the client half-closes, then half-closes too;
- TCP sink on `--sink`: reads until the client half-closes, then answers the byte count (benchmarks).

Standard library only: the pod runtime runs it as a host process inside the pod's netns.
"""

from __future__ import annotations

import argparse
import asyncio
import json


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            client, server = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            body = json.dumps(
                {"client": f"{client[0]}:{client[1]}", "server": f"{server[0]}:{server[1]}", "path": path}
            )
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write((head + body).encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    total = 0
    try:
        while data := await reader.read(1 << 20):
            total += len(data)
        writer.write(f"{total}\n".encode())
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0)
    parser.add_argument("--echo", type=int, default=0)
    parser.add_argument("--sink", type=int, default=0)
    args = parser.parse_args()
    servers = []
    if args.http:
        servers.append(await asyncio.start_server(_http, "0.0.0.0", args.http))
    if args.echo:
        servers.append(await asyncio.start_server(_echo, "0.0.0.0", args.echo))
    if args.sink:
        servers.append(await asyncio.start_server(_sink, "0.0.0.0", args.sink))
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())

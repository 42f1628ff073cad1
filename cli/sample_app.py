"""The sample application of the demo, the e2e tests and the benchmarks (console script
`mesh-sample-app`; pods run it as `mesh-sample-app --http 8080 --name v1`, or by path with any
Python 3).

- HTTP/1.1 on `--http` (keep-alive, Content-Length bodies): any method answers JSON `{"client":
  "ip:port", "server": "ip:port", "method", "path", "name": --name, "headers": {...}}`, so a test
  sees which address and which version the request reached (ztunnel keeps the client's IP).
  Special paths for the L7 tests: `/status/{code}` answers that code; `/flaky` answers 503 every
  other request (counted per process); `/delay/{ms}` answers after that long; `/bytes/{n}`
  answers n bytes; `/stats` answers how many requests came (itself not counted); with `--fail`
  every request gets 503;
- TCP echo on `--echo`: echoes every byte until the client half-closes, then half-closes too;
- TCP sink on `--sink`: reads until the client half-closes, then answers the byte count (benchmarks).

Standard library only: the pod runtime runs it as a host process inside the pod's netns.
"""

from __future__ import annotations

import argparse
import asyncio
import json

_state = {"name": "", "flaky": 0, "seen": 0, "fail": False}


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ", 2)[:2]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if int(headers.get("content-length") or 0):
                await reader.readexactly(int(headers["content-length"]))
            status = 503 if _state["fail"] else 200
            if path.startswith("/stats"):  # how many requests this process answered, not counting these
                body = json.dumps({"seen": _state["seen"], "name": _state["name"]}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                continue
            _state["seen"] += 1
            if path.startswith("/status/"):
                status = int(path.split("/")[2])
            elif path.startswith("/flaky"):
                _state["flaky"] += 1
                status = 503 if _state["flaky"] % 2 else 200
            elif path.startswith("/delay/"):
                await asyncio.sleep(int(path.split("/")[2]) / 1000)
            elif path.startswith("/bytes/"):  # a body of exactly that many bytes (benchmarks)
                size = int(path.split("/")[2])
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"b" * size)
                await writer.drain()
                continue
            client, server = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            body = json.dumps(
                {
                    "client": f"{client[0]}:{client[1]}",
                    "server": f"{server[0]}:{server[1]}",
                    "method": method,
                    "path": path,
                    "name": _state["name"],
                    "headers": headers,
                }
            )
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write((head + body).encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
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
    parser.add_argument("--name", default="", help="named in every HTTP answer (e.g. v1, v2)")
    parser.add_argument("--fail", action="store_true", help="answer every HTTP request with 503")
    args = parser.parse_args()
    _state["name"] = args.name
    _state["fail"] = args.fail
    servers = []
    if args.http:
        servers.append(await asyncio.start_server(_http, "0.0.0.0", args.http))
    if args.echo:
        servers.append(await asyncio.start_server(_echo, "0.0.0.0", args.echo))
    if args.sink:
        servers.append(await asyncio.start_server(_sink, "0.0.0.0", args.sink))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

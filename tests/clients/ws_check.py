"""A TLS WebSocket upstream (the `websockets` library) and a `websockets` client that reaches it through
Keyward (the client reads HTTPS_PROXY, as websockets >= 15 does by default).

The upstream records each handshake and message; the script never prints a secret, only what was seen:
- `roundtrip`: 3 messages echoed; `say-secret` makes the upstream send the real secret back (Keyward must
  scrub it); `close-secret` makes it close with the secret in the reason.
- `leak`: the client sends the real secret in a message (Keyward must close with 1008, sending nothing).
- `big`: the client sends a message over Keyward's limit (`--size` bytes; Keyward must close with 1009).
- `refused`: the handshake toward a host the placeholder is not bound to (403 before any upgrade).
- `idle`: the socket stays quiet (or pings) for a while, then sends; reports whether it was closed and how.
- `many`: opens N sockets, prints `ready`, holds them until stdin closes, then reports how many stayed open.
- `serve`: only the upstream; prints {"port": N}, then one JSON line per connection when it ends.

Usage: ws_check.py SCENARIO --cert C --key K --ca KEYWARD_CA --host NAME --placeholder P [--other-host NAME]
Env: WS_REAL_SECRET (what the upstream must receive in the Authorization header).
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

SECRET = os.environ["WS_REAL_SECRET"]


class Upstream:
    def __init__(self):
        self.connections = []

    async def handler(self, ws):
        record = {
            "path": ws.request.path,
            "authorization_real": ws.request.headers.get("Authorization") == f"Bearer {SECRET}",
            "placeholder_seen": "kw-placeholder" in str(ws.request.headers),
            "extensions_offered": "Sec-WebSocket-Extensions" in ws.request.headers,
            "messages": 0,
            "secret_in_message": False,
        }
        self.connections.append(record)
        try:
            async for message in ws:
                record["messages"] += 1
                text = message if isinstance(message, str) else message.decode(errors="replace")
                record["secret_in_message"] |= SECRET in text
                if text == "say-secret":
                    await ws.send(f"echo:{SECRET}")
                elif text == "close-secret":
                    await ws.close(4000, f"bye {SECRET}")
                else:
                    await ws.send(f"echo:{text}")
        except websockets.ConnectionClosed:
            pass
        finally:
            record["close_code"] = ws.close_code
            if self.print_each:
                print(json.dumps(record), flush=True)

    print_each = False


def server_ssl(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


def client_ssl(args):
    return ssl.create_default_context(cafile=args.ca)


def scrubbed(text):
    return SECRET not in text and SECRET.lower() not in text.lower()


async def scenario(args, port, upstream):
    url = f"wss://{args.host}:{port}/socket"
    headers = {"Authorization": f"Bearer {args.placeholder}"}
    out = {}
    if args.scenario == "refused":
        try:
            async with connect(f"wss://{args.other_host}:{port}/socket", additional_headers=headers,
                               ssl=client_ssl(args), open_timeout=10):
                out["opened"] = True
        except websockets.InvalidStatus as e:
            out["status"] = e.response.status_code
            out["error"] = json.loads(e.response.body or b"{}").get("error")
        out["upstream_connections"] = len(upstream.connections)
        return out
    if args.scenario == "many":
        sockets = []
        for _ in range(args.count):
            sockets.append(await connect(url, additional_headers=headers, ssl=client_ssl(args), open_timeout=20,
                                         ping_interval=None))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        out["open"] = sum(1 for s in sockets if s.state == websockets.protocol.State.OPEN)
        for s in sockets:
            await s.send("last")
            out.setdefault("answered", 0)
            out["answered"] += (await asyncio.wait_for(s.recv(), 10)).startswith("echo:")
            await s.close()
        return out
    async with connect(url, additional_headers=headers, ssl=client_ssl(args), open_timeout=10,
                       ping_interval=None) as ws:
        if args.scenario == "roundtrip":
            echoes = []
            for i in range(3):
                await ws.send(f"hello-{i}")
                echoes.append(await asyncio.wait_for(ws.recv(), 10))
            out["echoes"] = echoes
            await ws.send("say-secret")
            echoed = await asyncio.wait_for(ws.recv(), 10)
            out["secret_echo_scrubbed"] = scrubbed(echoed)
            out["secret_echo_has_placeholder"] = args.placeholder in echoed
            await ws.send("close-secret")
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                out["close_code"] = e.rcvd.code if e.rcvd else None
                out["close_reason_scrubbed"] = scrubbed(e.rcvd.reason if e.rcvd else "")
        elif args.scenario == "big":
            try:
                await ws.send("x" * args.size)
                await asyncio.wait_for(ws.recv(), 10)
                out["closed"] = False
            except websockets.ConnectionClosed as e:
                out["closed"] = True
                out["close_code"] = e.rcvd.code if e.rcvd else None
        elif args.scenario == "leak":
            await ws.send(f"here it is: {SECRET}")
            try:
                await asyncio.wait_for(ws.recv(), 10)
                out["closed"] = False
            except websockets.ConnectionClosed as e:
                out["closed"] = True
                out["close_code"] = e.rcvd.code if e.rcvd else None
        elif args.scenario == "idle":
            loop = asyncio.get_running_loop()
            end = loop.time() + args.quiet
            try:
                while loop.time() < end:
                    if args.ping_every:
                        await asyncio.wait_for(ws.ping(), 5)
                        await asyncio.sleep(args.ping_every)
                    else:
                        await asyncio.sleep(0.1)
                        if ws.state != websockets.protocol.State.OPEN:
                            break
                await ws.send("after-quiet")
                out["answer"] = await asyncio.wait_for(ws.recv(), 10)
                out["closed"] = False
            except websockets.ConnectionClosed as e:
                out["closed"] = True
                out["close_code"] = e.rcvd.code if e.rcvd else None
    return out


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["roundtrip", "leak", "big", "refused", "idle", "many", "serve"])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--host", default="api.keyward.test")
    parser.add_argument("--other-host", default="other.keyward.test")
    parser.add_argument("--placeholder", default="")
    parser.add_argument("--quiet", type=float, default=0)
    parser.add_argument("--ping-every", type=float, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2 * 1024 * 1024, help="bytes of the `big` message")
    parser.add_argument("--bind", default="127.0.0.1", help="the upstream's address")
    parser.add_argument("--port", type=int, default=0, help="the upstream's port (0: any free one)")
    args = parser.parse_args()
    upstream = Upstream()
    upstream.print_each = args.scenario == "serve"
    async with serve(upstream.handler, args.bind, args.port, ssl=server_ssl(args), ping_interval=None,
                     max_size=2**20) as server:
        port = server.sockets[0].getsockname()[1]
        if args.scenario == "serve":
            print(json.dumps({"port": port}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            return
        out = await scenario(args, port, upstream)
        await asyncio.sleep(0.2)
        out["upstream"] = upstream.connections
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

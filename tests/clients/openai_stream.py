"""The openai Python SDK, streaming, under `keyward exec`: a small OpenAI-compatible TLS upstream (chat
completions as server-sent events) runs in this process and records the Authorization it receives; the SDK
calls it with OPENAI_API_KEY from the environment (the placeholder) and only the proxy and trust settings that
exec sets. Prints one JSON object: the streamed text and what the upstream saw.
Usage: openai_stream.py --cert C --key K --host NAME
"""
import argparse
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--cert", "--key", "--host"):
        p.add_argument(name, required=True)
    a = p.parse_args()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            seen.append(self.headers.get("Authorization", ""))
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for word in ["Hello", " from", " upstream"]:
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                self.write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self.write_chunk(b"data: [DONE]\n\n")
            self.write_chunk(b"")

        def write_chunk(self, data):
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.cert, a.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = openai.OpenAI(base_url=f"https://{a.host}:{server.server_address[1]}/v1", max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    server.shutdown()
    print(json.dumps({"text": text, "seen": seen}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The servers tests/netns/capture.py runs inside its network namespace, each in a thread of the test process:
an HTTP(S) upstream that records every request's headers, and raw TCP servers that speak no HTTP."""

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Upstream:
    """An HTTP/1.1 server on (ip, port), TLS when `cert` is given; answers 200 with a small JSON body and keeps
    (path, headers, peer) of every request, and the peer of every accepted connection."""

    def __init__(self, name, ip, port, cert=None, key=None):
        self.name, self.ip, self.port = name, ip, port
        self.lock = threading.Lock()
        self._requests, self._connections = [], []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with upstream.lock:
                    upstream._requests.append({
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "peer": self.client_address[0],
                    })
                body = json.dumps({"server": upstream.name, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_any

            def log_message(self, *args):  # headers may hold secrets; the request line does not matter
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = super().get_request()
                with upstream.lock:
                    upstream._connections.append(addr[0])
                return sock, addr

            def handle_error(self, request, client_address):  # a refused handshake is not worth a traceback
                pass

        self.server = Server((ip, port), Handler)
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            context.set_alpn_protocols(["http/1.1"])
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def requests(self):
        with self.lock:
            return list(self._requests)

    def connections(self):
        with self.lock:
            return list(self._connections)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RawServer:
    """A TCP server speaking a line protocol that is not HTTP. With `greeting`, it speaks first (as SMTP, SSH or
    MySQL servers do); every line received is answered with `pong <line>`. Keeps what each connection sent."""

    def __init__(self, ip, port, greeting=None):
        self.ip, self.port, self.greeting = ip, port, greeting
        self.lock = threading.Lock()
        self._connections = []  # bytes received, one entry per accepted connection
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                index = len(self._connections)
                self._connections.append(b"")
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn, index):
        conn.settimeout(10)
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            pending = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                with self.lock:
                    self._connections[index] += data
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    conn.sendall(b"pong " + line + b"\n")
        except OSError:
            pass
        finally:
            conn.close()

    def connections(self):
        with self.lock:
            return list(self._connections)

    def close(self):
        self.stopping.set()
        self.sock.close()

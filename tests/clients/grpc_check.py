"""gRPC through Keyward with grpcio, which honours https_proxy: a TLS gRPC upstream (generic handlers, raw
bytes, no generated code) records the metadata it receives; the client calls it through the proxy, trusting
Keyward's CA. Checks unary, bidirectional streaming and a non-OK status carried in trailers. Prints one JSON
object with what it saw. Usage: grpc_check.py --cert C --key K --ca KEYWARD_CA --host NAME --placeholder P
"""
import argparse
import json
import sys
from concurrent import futures

import grpc


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--cert", "--key", "--ca", "--host", "--placeholder"):
        p.add_argument(name, required=True)
    a = p.parse_args()
    seen = []

    def unary(request, context):
        seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        return b"pong:" + request

    def stream(requests, context):
        seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        for r in requests:
            yield b"echo:" + r

    def fails(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handlers = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
        "Fails": grpc.unary_unary_rpc_method_handler(fails),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers,))
    creds = grpc.ssl_server_credentials([(open(a.key, "rb").read(), open(a.cert, "rb").read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    out = {}
    try:
        channel = grpc.secure_channel(f"{a.host}:{port}", grpc.ssl_channel_credentials(open(a.ca, "rb").read()))
        metadata = (("authorization", f"Bearer {a.placeholder}"),)
        out["unary"] = channel.unary_unary("/test.Echo/Unary")(b"ping", metadata=metadata, timeout=10).decode()
        replies = channel.stream_stream("/test.Echo/Stream")(iter([b"1", b"2", b"3"]), metadata=metadata, timeout=10)
        out["stream"] = [r.decode() for r in replies]
        try:
            channel.unary_unary("/test.Echo/Fails")(b"x", metadata=metadata, timeout=10)
            out["fails"] = "no error"
        except grpc.RpcError as e:
            out["fails"] = [e.code().name, e.details()]
    except grpc.RpcError as e:
        out["error"] = f"{e.code().name}: {e.details()}"
    finally:
        server.stop(0)
    out["seen"] = seen
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

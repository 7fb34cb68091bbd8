"""An agent-like HTTP client for the end-to-end tests.

Configured only by environment, as an agent behind Keyward is: HTTPS_PROXY for the proxy, SSL_CERT_FILE /
REQUESTS_CA_BUNDLE for the CA. Prints one JSON object: status, body, http_version.
"""
import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["requests", "httpx"], required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--url", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--http2", action="store_true")
    p.add_argument("--json", help="a JSON document sent as the request body")
    p.add_argument("--bytes", type=int, help="send this many bytes (x) as the request body")
    a = p.parse_args()
    headers = dict(h.split(": ", 1) for h in a.header)
    body = json.loads(a.json) if a.json is not None else None
    content = b"x" * a.bytes if a.bytes is not None else None
    if a.lib == "requests":
        import requests

        r = requests.request(a.method, a.url, headers=headers, json=body, data=content, timeout=20)
        version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(r.raw.version, str(r.raw.version))
        out = {"status": r.status_code, "body": r.text, "http_version": version}
    else:
        import httpx

        with httpx.Client(http2=a.http2, timeout=20) as client:
            r = client.request(a.method, a.url, headers=headers, json=body, content=content)
            out = {"status": r.status_code, "body": r.text, "http_version": r.http_version}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

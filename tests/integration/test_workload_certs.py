"""The workload API's certificates and crypto, called by real modules: process modules started by
cairnd's agent (tests/integration/workload_probe.py) make the calls over their own unix sockets,
so the agent's peer-credential check sees module processes. The test then uses what they got: the
issued certificates in a real TLS handshake against the trust bundle, and the ciphertexts across
modules.
"""
import base64
import datetime
import json
import os
import socket
import ssl
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import HOST, IOTHUB_HOSTNAME, unix_http, wait_for
from test_agent import SLOW, deploy, edge, manifest, process_module, wait_running  # noqa: F401
from test_agent import module_pid, alive

PROBE = Path(__file__).with_name("workload_probe.py")
API = "?api-version=2020-07-07"
MAX_CRYPTO_INPUT = 16 * 1024  # kMaxCryptoInputBytes
MAX_VALIDITY = datetime.timedelta(days=90)  # kMaxCertificateValiditySecs


class Probe:
    """One deployed workload_probe module: call() has it make a workload API request."""

    def __init__(self, edge, name, box):
        self.edge, self.name, self.box, self.n = edge, name, box, 0
        env_file = box / "env.json"
        self.env = json.loads(wait_for(lambda: env_file.exists() and env_file.read_text(),
                                       timeout=SLOW, what=f"{name}'s environment"))
        self.genid = self.env["IOTEDGE_MODULEGENERATIONID"]

    def call(self, method, path, body=None, socket_of=None):
        request = {"method": method, "path": path + API,
                   "body": body if body is None or isinstance(body, str) else json.dumps(body)}
        if socket_of:
            request["socket"] = str(self.edge.home / "run" / "mnt" / f"{socket_of}.sock")
        tmp = self.box / "request.tmp"
        tmp.write_text(json.dumps(request))
        tmp.rename(self.box / f"{self.n}.request.json")
        answer = self.box / f"{self.n}.answer.json"
        wait_for(answer.exists, timeout=SLOW, what=f"{self.name}'s answer to {method} {path}")
        self.n += 1
        a = json.loads(answer.read_text())
        return a["status"], (json.loads(a["body"]) if a["body"] else None)

    def crypt(self, op, field, data, iv, genid=None):
        return self.call("POST", f"/modules/{self.name}/genid/{genid or self.genid}/{op}",
                         {field: b64(data), "initializationVector": b64(iv)})


def b64(data):
    return base64.b64encode(data).decode()


def probes(edge, tmp_path, names):
    mods = {n: process_module(sys.executable, [str(PROBE)],
                              env={"CAIRN_TEST_BOX": str(tmp_path / n)}) for n in names}
    deploy(edge, manifest(mods))
    wait_running(edge, names)
    return {n: Probe(edge, n, tmp_path / n) for n in names}


def certificates(pem):
    marker = "-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate((part + marker).encode())
            for part in pem.split(marker) if "BEGIN CERTIFICATE" in part]


def signed_by(cert, ca):
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
        return True
    except Exception:  # cryptography's InvalidSignature
        return False


def check_issued(answer, trust_pem):
    """The 201 body's certificate chain: leaf signed by the trust bundle's CA, then that CA;
    the private key is the leaf's; "expiration" is the leaf's not-after. Returns the leaf."""
    assert set(answer) == {"privateKey", "certificate", "expiration"}, answer
    assert answer["privateKey"]["type"] == "key"
    chain = certificates(answer["certificate"])
    ca = certificates(trust_pem)[0]
    assert len(chain) == 2 and chain[1] == ca
    leaf = chain[0]
    assert leaf.issuer == ca.subject and signed_by(leaf, ca)
    key = serialization.load_pem_private_key(answer["privateKey"]["bytes"].encode(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    expiration = datetime.datetime.fromisoformat(answer["expiration"].replace("Z", "+00:00"))
    assert expiration.replace(tzinfo=None) == leaf.not_valid_after
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    return leaf


def san(leaf, kind):
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(kind)


def eku(leaf):
    return list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def tls_handshake(tmp_path, trust_pem, server, client, hostname):
    """A TLS server with the `server` answer's certificate requiring a client certificate from
    the trust bundle, and a client with the `client` answer's, verifying `hostname`. Returns the
    server's view of the client certificate, or raises the client's ssl error."""
    files = {}
    for role, answer in (("server", server), ("client", client)):
        (tmp_path / f"{role}.pem").write_text(answer["certificate"])
        (tmp_path / f"{role}.key").write_text(answer["privateKey"]["bytes"])
        files[role] = (str(tmp_path / f"{role}.pem"), str(tmp_path / f"{role}.key"))
    (tmp_path / "trust.pem").write_text(trust_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*files["server"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(str(tmp_path / "trust.pem"))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    client_ctx.load_verify_locations(str(tmp_path / "trust.pem"))
    client_ctx.load_cert_chain(*files["client"])
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1)
    seen = {}

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                seen["peer"] = s.getpeercert()
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen["error"] = e
    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as c:
                assert c.recv(2) == b"ok"
    finally:
        t.join(10)
        listener.close()
    return seen["peer"]


def test_module_certificates_chain_to_the_trust_bundle(edge, tmp_path):
    alpha = probes(edge, tmp_path, ["alpha"])["alpha"]
    status, trust = alpha.call("GET", "/trust-bundle")
    assert status == 200
    trust_pem = trust["certificate"]

    # Identity certificate, no body: the module's id as CN and as an azureiot:// URI, client
    # authentication, the default validity.
    status, identity = alpha.call("POST", "/modules/alpha/certificate/identity")
    assert status == 201, identity
    leaf = check_issued(identity, trust_pem)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alpha"
    assert san(leaf, x509.UniformResourceIdentifier) == [
        f"azureiot://{IOTHUB_HOSTNAME}/devices/{edge.device_id}/modules/alpha"]
    assert eku(leaf) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.not_valid_after - leaf.not_valid_before <= MAX_VALIDITY + datetime.timedelta(hours=1)
    # With an expiration (the '$' form of the name is the same module): exactly that not-after.
    wanted = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)) \
        .replace(microsecond=0)
    status, short = alpha.call("POST", "/modules/$alpha/certificate/identity",
                               {"expiration": wanted.isoformat().replace("+00:00", "Z")})
    assert status == 201, short
    assert check_issued(short, trust_pem).not_valid_after == wanted.replace(tzinfo=None)

    # Server certificates: SANs the commonName (DNS, or IP for an address) and the module id.
    status, server = alpha.call("POST", f"/modules/alpha/genid/{alpha.genid}/certificate/server",
                                {"commonName": "localhost",
                                 "expiration": wanted.isoformat().replace("+00:00", "Z")})
    assert status == 201, server
    leaf = check_issued(server, trust_pem)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert san(leaf, x509.DNSName) == ["localhost", "alpha"]
    assert eku(leaf) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_after == wanted.replace(tzinfo=None)
    status, by_ip = alpha.call("POST", f"/modules/alpha/genid/{alpha.genid}/certificate/server",
                               {"commonName": HOST})
    assert status == 201, by_ip
    leaf = check_issued(by_ip, trust_pem)
    assert [str(a) for a in san(leaf, x509.IPAddress)] == [HOST]
    assert san(leaf, x509.DNSName) == ["alpha"]

    # They work: a TLS server with the server certificate, a client presenting the identity
    # certificate, each verifying the other against the trust bundle alone.
    peer = tls_handshake(tmp_path, trust_pem, server, identity, "localhost")
    assert dict(x[0] for x in peer["subject"])["commonName"] == "alpha"
    # The names and usages matter: another host name fails, and so does an identity
    # certificate offered as a server's.
    for server_answer, hostname in ((server, "elsewhere.example"), (identity, "alpha")):
        try:
            tls_handshake(tmp_path, trust_pem, server_answer, identity, hostname)
        except ssl.SSLCertVerificationError as e:
            assert "certificate verify failed" in str(e)
        else:
            raise AssertionError(f"the handshake for {hostname} should fail")


def test_encryption_is_per_module_and_no_module_acts_as_another(edge, tmp_path):
    mods = probes(edge, tmp_path, ["alpha", "beta"])
    alpha, beta = mods["alpha"], mods["beta"]
    secret, iv = b"the model's licence key", os.urandom(12)
    status, enc = alpha.crypt("encrypt", "plaintext", secret, iv)
    assert status == 200, enc
    ciphertext = base64.b64decode(enc["ciphertext"])
    assert len(ciphertext) == len(secret) + 16 and secret not in ciphertext
    status, dec = alpha.crypt("decrypt", "ciphertext", ciphertext, iv)
    assert status == 200 and base64.b64decode(dec["plaintext"]) == secret
    # Another IV encrypts differently; a wrong IV or a flipped bit does not decrypt.
    assert base64.b64decode(alpha.crypt("encrypt", "plaintext", secret, os.urandom(12))[1][
        "ciphertext"]) != ciphertext
    status, body = alpha.crypt("decrypt", "ciphertext", ciphertext, os.urandom(12))
    assert status == 400 and "does not verify" in body["message"]
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert alpha.crypt("decrypt", "ciphertext", tampered, iv)[0] == 400

    # beta cannot read alpha's data: under its own identity the ciphertext does not verify...
    status, body = beta.crypt("decrypt", "ciphertext", ciphertext, iv)
    assert status == 400 and "does not verify" in body["message"]
    # ...and it cannot act as alpha, on its own socket or on alpha's.
    body = {"ciphertext": b64(ciphertext), "initializationVector": b64(iv)}
    for socket_of in (None, "alpha"):
        for method, path, payload in (
                ("POST", f"/modules/alpha/genid/{alpha.genid}/decrypt", body),
                ("POST", f"/modules/alpha/genid/{alpha.genid}/encrypt",
                 {"plaintext": b64(b"x"), "initializationVector": b64(iv)}),
                ("POST", "/modules/alpha/certificate/identity", None),
                ("POST", f"/modules/alpha/genid/{alpha.genid}/certificate/server",
                 {"commonName": "localhost"})):
            status, answer = beta.call(method, path, payload, socket_of=socket_of)
            assert status == 403 and "not module 'alpha'" in answer["message"], (path, answer)
    # A process that is no module (this test) gets no certificate either.
    status, answer = unix_http(edge.home / "run" / "mnt" / "alpha.sock", "POST",
                                   f"/modules/alpha/certificate/identity{API}", "{}")
    assert status == 403 and "message" in answer
    # alpha is unaffected.
    assert alpha.crypt("decrypt", "ciphertext", ciphertext, iv)[1]["plaintext"] == b64(secret)


def test_bad_workload_requests_get_a_clear_4xx_and_change_nothing(edge, tmp_path):
    alpha = probes(edge, tmp_path, ["alpha"])["alpha"]
    pid = module_pid(edge, "alpha")
    g = alpha.genid
    enc, ident = f"/modules/alpha/genid/{g}/encrypt", "/modules/alpha/certificate/identity"
    server = f"/modules/alpha/genid/{g}/certificate/server"
    iv = b64(os.urandom(12))
    cases = [
        (enc, {"plaintext": "not base64!", "initializationVector": iv}, 400, "not base64"),
        (enc, {"plaintext": b64(b"x" * (MAX_CRYPTO_INPUT + 1)), "initializationVector": iv},
         413, f"the limit is {MAX_CRYPTO_INPUT}"),
        (enc, {"plaintext": b64(b"x")}, 400, "initializationVector (base64) is required"),
        (enc, {"plaintext": b64(b"x"), "initializationVector": b64(b"v" * 257)}, 413,
         "the limit is 256"),
        (f"/modules/alpha/genid/{g}/decrypt", {"ciphertext": "AAAA", "initializationVector": iv},
         400, "too short"),
        (f"/modules/alpha/genid/not{g}/encrypt", {"plaintext": b64(b"x"),
                                                   "initializationVector": iv},
         400, "generation id"),
        (enc, "this is not JSON", 400, "not JSON"),
        (enc, "[1, 2]", 400, "JSON object"),
        (ident, {"expiration": "2020-01-01T00:00:00Z"}, 400, "in the past"),
        (ident, {"expiration": "9999-12-31T23:59:59Z"}, 400, "more than 90 days away"),
        (ident, {"expiration": "tomorrow"}, 400, "not an RFC 3339 time"),
        (ident, {"expiration": "2030-02-30T00:00:00Z"}, 400, "not an RFC 3339 time"),
        (ident, {"expiration": 1893456000}, 400, "RFC 3339 time string"),
        (server, {}, 400, "commonName"),
        (server, {"commonName": "a,DNS:evil.example"}, 400, "is not a host name"),
        (server, {"commonName": "h" * 65}, 400, "1 to 64 characters"),
        (f"/modules/alpha/genid/{g}/certificate/client", {}, 404, "no such workload API path"),
    ]
    for path, body, want_status, want_text in cases:
        status, answer = alpha.call("POST", path, body)
        assert status == want_status and want_text in answer["message"], (path, body, answer)
    # A body over the socket's 64 KiB limit is refused before it is read.
    status, _ = alpha.call("POST", enc, {"plaintext": b64(b"x" * 70000),
                                         "initializationVector": iv})
    assert status == 413
    # The module and cairnd carry on: the same module still gets its certificate.
    status, answer = alpha.call("POST", ident)
    assert status == 201, answer
    assert module_pid(edge, "alpha") == pid and alive(pid)
    assert edge.running()

"""mTLS and access control between sidecars, on loopback as in `make run`: Sentry built from the pinned release gives
every sidecar its certificate, and the regression sidecar enforces the access control of regression's Kubernetes
Configuration (k8s/base), its app ids made this test's own (policies match callers by app id).

Tried: the callers that policy allows (gateway, features) and one it does not (nlp); the callee's internal gRPC port
(sidecar to sidecar, no API token) without TLS, with a client certificate for an allowed app id from a CA the sidecars
do not trust, and with one that Sentry's issuer signed (which the port accepts, so the refusals are the certificate's).
"""

import datetime
import secrets
import socket
import ssl
import sys
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .full_stack import configs
from .stack import Sidecar, Stack, free_port

pytestmark = pytest.mark.integration

ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
INFER = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}
# The HTTP/2 connection preface and an empty SETTINGS frame: what a gRPC client sends first.
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class Mesh:
    def __init__(self, stack: Stack, model_repository: Path):
        suffix = secrets.token_hex(3)
        self.ids = {name: f"{name}-{suffix}" for name in ("regression", "gateway", "features", "nlp")}
        self.sentry = stack.start_sentry()
        access = configs.kubernetes_access_control()["regression"]
        # Every app the policies name gets the suffix, also those this test does not start (pipelines).
        access = {**access, "policies": [{**p, "appId": f"{p['appId']}-{suffix}"} for p in access["policies"]]}
        config = stack.work / f"config-{self.ids['regression']}.yaml"
        config.write_text(yaml.safe_dump(configs.local_configuration(access)))
        resources = stack.work / "no-resources"
        resources.mkdir(exist_ok=True)
        app_port, sidecar_port = free_port(), free_port()
        stack.start_app(
            "regression",
            [sys.executable, "-m", "regression"],
            app_port,
            DAPR_HTTP_PORT=str(sidecar_port),
            REGRESSION_MODEL_REPOSITORY=str(model_repository),
        )
        self.callee = stack.start_sidecar(
            self.ids["regression"], resources, app_port, sidecar_port, config=config, sentry=self.sentry
        )
        self.callers: dict[str, Sidecar] = {
            name: stack.start_sidecar(self.ids[name], resources, sentry=self.sentry)
            for name in ("gateway", "features", "nlp")
        }
        self.headers = {"dapr-api-token": stack.dapr_api_token}

    def infer(self, caller: str) -> httpx.Response:
        url = f"{self.callers[caller].url}/v1.0/invoke/{self.ids['regression']}/method/v2/models/diabetes/infer"
        return httpx.post(url, json=INFER, headers=self.headers, timeout=30)


@pytest.fixture(scope="module")
def mesh(stack: Stack, model_repository: Path) -> Mesh:
    return Mesh(stack, model_repository)


def test_callers_the_kubernetes_policy_allows_pass_and_nlp_gets_403_from_the_callees_sidecar(mesh: Mesh):
    for caller in ("gateway", "features"):
        answer = mesh.infer(caller)
        assert answer.status_code == 200, (caller, answer.text)
        assert answer.json()["outputs"][0]["shape"] == [1, 1]
    refused = mesh.infer("nlp")
    assert refused.status_code == 403, refused.text
    assert f"spiffe://public/ns/default/{mesh.ids['nlp']}" in refused.text


def test_a_sidecar_to_sidecar_call_without_tls_is_refused(mesh: Mesh):
    with grpc.insecure_channel(f"127.0.0.1:{mesh.callee.internal_grpc_port}") as channel:
        call = channel.unary_unary("/dapr.proto.internals.v1.ServiceInvocation/CallLocal")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused_and_one_from_sentrys_issuer_is_accepted(mesh: Mesh, tmp_path: Path):
    spiffe_id = f"spiffe://public/ns/default/{mesh.ids['gateway']}"
    sentry_files = mesh.sentry.credentials
    issuer = x509.load_pem_x509_certificate((sentry_files / "issuer.crt").read_bytes())
    issuer_key = serialization.load_pem_private_key((sentry_files / "issuer.key").read_bytes(), None)
    assert talks_http2(mesh, client_certificate(tmp_path / "sentry", spiffe_id, issuer, issuer_key))

    forger_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "not Sentry")])
    forger = certificate(name, name, forger_key.public_key(), forger_key, spiffe_id="spiffe://public", ca=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talks_http2(mesh, client_certificate(tmp_path / "forged", spiffe_id, forger, forger_key))


def talks_http2(mesh: Mesh, chain: tuple[Path, Path]) -> bool:
    """A TLS connection to the callee's internal gRPC port with client certificate `chain` (certificates, key), the
    server's certificate checked against Sentry's root: True when the server answers the HTTP/2 preface with its
    SETTINGS frame. Raises when the server refuses the certificate."""
    context = ssl.create_default_context(cafile=str(mesh.sentry.credentials / "ca.crt"))
    context.check_hostname = False  # a sidecar's certificate names a SPIFFE id, no host
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(*map(str, chain))
    with socket.create_connection(("127.0.0.1", mesh.callee.internal_grpc_port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(HTTP2_HELLO)
            frame = tls.recv(9)
    if not frame:
        raise ConnectionError("the server closed the connection")
    return frame[3] == 0x04  # a SETTINGS frame


def client_certificate(folder: Path, spiffe_id: str, issuer: x509.Certificate, issuer_key) -> tuple[Path, Path]:
    """A workload certificate for `spiffe_id` signed by `issuer`, written as (chain file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(x509.Name([]), issuer.subject, key.public_key(), issuer_key, spiffe_id=spiffe_id)
    folder.mkdir()
    chain, key_file = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + issuer.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


def certificate(subject, issuer_name, public_key, signing_key, *, spiffe_id: str, ca=False) -> x509.Certificate:
    """An X.509 SVID for `spiffe_id` (a workload's, or with `ca` an authority's)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=not ca)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        ).add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
    # Sentry's issuer key is Ed25519, which takes no separate hash.
    return builder.sign(signing_key, hashes.SHA256() if isinstance(signing_key, ec.EllipticCurvePrivateKey) else None)

"""`make run` as a user runs it, in a terminal: the committed template on the built runtime with Redis, Sentry and
the simulator; every server of it on loopback, nothing answering from another network, mTLS and the Kubernetes
access control between sidecars; and Ctrl-C stopping every process it started whether its output goes to the
terminal, a pipe (`make run 2>&1 | tee run.log`, where `dapr run` used to die of SIGPIPE and leave 14 processes)
or a file."""

import contextlib
import fcntl
import ipaddress
import os
import pty
import secrets
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import yaml

from gateway.newkey import ensure_key
from tandem.grpc_protocol import SERVICE, message

from .processes import listeners, session
from .stack import ROOT, environment, wait_until

pytestmark = pytest.mark.integration

TEMPLATE = yaml.safe_load((ROOT / "dapr.yaml").read_text())
APPS = {app["appID"]: app for app in TEMPLATE["apps"]}
REGRESSION, NLP, GATEWAY, FEATURES = APPS["regression"], APPS["nlp"], APPS["gateway"], APPS["features"]
# Where the committed secret store reads the gateway's API keys; `make run` creates it the same way.
SECRETS = ROOT / ".data" / "secrets.json"
REDIS_PORT, SENTRY_PORT = 16379, 50001
ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
INFER = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}
OUTPUTS = {"terminal": "make run", "pipe": "make run 2>&1 | tee {log}", "file": "make run > {log} 2>&1"}


class Terminal:
    """A command run by bash in a terminal of its own (a pseudo-terminal, the controlling terminal of a new session),
    so that Ctrl-C reaches it as it reaches a user's `make run`."""

    def __init__(self, command: str, env: dict[str, str]):
        self.master, replica = pty.openpty()
        self.popen = subprocess.Popen(
            ["bash", "-c", command],
            stdin=replica,
            stdout=replica,
            stderr=replica,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(replica)
        self.output = bytearray()
        # Read all along: a terminal nobody reads fills up and blocks the writer.
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # every writer closed its end
                return
            if not chunk:
                return
            self.output += chunk

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def processes(self) -> dict[int, str]:
        """Every live process of the terminal's session: all that `make run` started, wherever it moved itself."""
        return session(self.popen.pid)

    def tail(self) -> str:
        return self.output[-3000:].decode(errors="replace")


@pytest.fixture
def tokens() -> dict[str, str]:
    return {"DAPR_API_TOKEN": secrets.token_urlsafe(16), "APP_API_TOKEN": secrets.token_urlsafe(16)}


def start_make_run(command: str, tokens: dict[str, str]) -> Terminal:
    """`command` in a terminal, once every sidecar is healthy and the gateway ready."""
    ports = [REDIS_PORT, SENTRY_PORT] + [app[key] for app in APPS.values() for key in ("appPort", "daprHTTPPort")]
    busy = [port for port in ports if _accepts(port)]
    if busy:
        pytest.fail(f"ports {busy} are taken (is `make run` running?): the template needs them")
    terminal = Terminal(command, environment(**tokens))
    try:
        for app in APPS.values():
            wait_until(
                lambda app=app: _alive(terminal) and _healthy(app["daprHTTPPort"]),
                f"{app['appID']}'s sidecar healthy\n{terminal.tail()}",
                timeout=180,
            )
        wait_until(
            lambda: _alive(terminal) and httpx.get(f"http://127.0.0.1:{GATEWAY['appPort']}/v2/health/ready").is_success,
            f"gateway ready\n{terminal.tail()}",
            timeout=120,
        )
    except BaseException:
        _kill(terminal)  # a stack that never got ready is left to no one else
        raise
    return terminal


def ctrl_c_stops_everything(terminal: Terminal) -> None:
    started = terminal.processes()
    assert any("daprd" in command for command in started.values()), started
    terminal.ctrl_c()
    terminal.popen.wait(timeout=90)
    deadline = time.monotonic() + 30
    while terminal.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not terminal.processes(), f"left running after Ctrl-C: {terminal.processes()}\n{terminal.tail()}"
    assert not [port for port in (SENTRY_PORT, GATEWAY["appPort"], REGRESSION["daprHTTPPort"]) if _accepts(port)]


def test_make_run_serves_on_loopback_with_mtls_and_access_control_and_stops_on_ctrl_c(tokens, model_repository):
    """Through the sidecars and the gateway as the README shows; then what an attacker on another network or with
    another app id would try (after a call over gRPC through the gateway): every listening socket of the stack is on loopback, none answers from a network
    namespace of its own (while a socket on every interface does), nlp's sidecar may not call regression (403) while
    the gateway's and features' may, regression's may register with the gateway and call nothing else of it, and
    regression's internal gRPC port refuses a caller without a certificate."""
    api_key = ensure_key(SECRETS, "local")
    terminal = start_make_run(OUTPUTS["terminal"], tokens)
    try:
        headers = {"dapr-api-token": tokens["DAPR_API_TOKEN"]}
        sidecar = f"http://127.0.0.1:{REGRESSION['daprHTTPPort']}"
        response = httpx.post(
            f"{sidecar}/v1.0/invoke/regression/method/v2/models/diabetes/infer", json=INFER, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["shape"] == [1, 1]
        metadata = httpx.get(f"{sidecar}/v1.0/metadata", headers=headers).json()
        built = (ROOT / ".runtime" / ".dapr" / "bin" / "daprd.version").read_text().split()  # version, platform
        assert metadata["runtimeVersion"] == built[0]
        assert {component["name"] for component in metadata["components"]} == {"pubsub"}
        nlp = f"http://127.0.0.1:{NLP['daprHTTPPort']}"
        sentiment = httpx.post(
            f"{nlp}/v1.0/invoke/nlp/method/sentiment", json={"texts": ["I love it"]}, headers=headers
        )
        assert sentiment.json()["results"][0]["label"] == "positive"
        through_gateway = httpx.post(
            f"http://127.0.0.1:{GATEWAY['appPort']}/v2/models/diabetes/infer",
            json=INFER,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert through_gateway.json() == response.json()
        # The same over gRPC: the gateway's port, its sidecar, regression-grpc's sidecar, the app's gRPC port.
        request = message("ModelInferRequest")(model_name="diabetes")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 10])
        request.raw_input_contents.append(np.array([ROW], dtype="<f4").tobytes())
        with grpc.insecure_channel(f"127.0.0.1:{GATEWAY['env']['GATEWAY_GRPC_PORT']}") as channel:
            infer = channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=lambda value: value.SerializeToString(),
                response_deserializer=message("ModelInferResponse").FromString,
            )
            answer = infer(request, metadata=[("authorization", f"Bearer {api_key}")], timeout=30)
        over_grpc = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
        np.testing.assert_allclose(over_grpc, response.json()["outputs"][0]["data"], rtol=1e-6)

        for caller, allowed in ((GATEWAY, True), (FEATURES, True), (NLP, False)):
            # make run's app ids are fixed: mDNS may also offer another stack's "regression" on this host, which
            # fails our sidecars' TLS handshake (500). Of ten calls, those that reach ours must all say the same.
            url = f"http://127.0.0.1:{caller['daprHTTPPort']}/v1.0/invoke/regression/method/v2/health/ready"
            codes = {httpx.get(url, headers=headers).status_code for _ in range(10)}
            assert codes - {500} == {200 if allowed else 403}, (caller["appID"], codes)
        # The model services may register with the gateway, and call nothing else of it.
        gateway_via_regression = f"http://127.0.0.1:{REGRESSION['daprHTTPPort']}/v1.0/invoke/gateway/method"
        registered = httpx.post(f"{gateway_via_regression}/services/register", headers=headers, content=b"")
        assert registered.status_code == 200, registered.text
        refused = httpx.get(f"{gateway_via_regression}/v2/health/live", headers=headers)
        assert refused.status_code == 403, refused.text

        sockets = listeners(terminal.processes())
        ports = {listener.port for listener in sockets}
        assert {REDIS_PORT, SENTRY_PORT, REGRESSION["daprHTTPPort"], REGRESSION["metricsPort"]} <= ports
        assert {app["appPort"] for app in APPS.values()} <= ports
        assert [listener for listener in sockets if not listener.loopback] == []
        assert_nothing_answers_from_another_network(sorted(ports))
        internal = internal_grpc_port(sockets, "regression")
        assert_plaintext_call_refused(internal)
        ctrl_c_stops_everything(terminal)
    finally:
        _kill(terminal)


@pytest.mark.parametrize("output", ["pipe", "file"])
def test_ctrl_c_stops_everything_when_the_output_goes_to(output, tokens, tmp_path):
    terminal = start_make_run(OUTPUTS[output].format(log=tmp_path / "run.log"), tokens)
    try:
        ctrl_c_stops_everything(terminal)
        shown = (tmp_path / "run.log").read_text()
        assert "Tandem is starting" in shown and "Uvicorn running on http://127.0.0.1:8006" in shown, shown[-2000:]
    finally:
        _kill(terminal)


def internal_grpc_port(sockets, app_id: str) -> int:
    """The port of `app_id`'s daprd that the template does not fix: its internal gRPC server (the CLI picks it)."""
    app = APPS[app_id]
    fixed = {app["daprHTTPPort"], app["daprGRPCPort"], app["metricsPort"]}
    found = [s.port for s in sockets if f"--app-id {app_id} " in s.command + " " and s.port not in fixed]
    assert len(found) == 1, found
    return found[0]


def assert_plaintext_call_refused(port: int) -> None:
    """A gRPC call without TLS to a sidecar's internal port: with mTLS the sidecar ends the connection."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/dapr.proto.internals.v1.ServiceInvocation/CallLocal")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value


def assert_nothing_answers_from_another_network(ports: list[int]) -> None:
    """From a network namespace joined to this one by a veth pair, connect to this side's addresses (IPv4 and IPv6) on
    every port: all must be refused, while a socket on every interface, opened here for the purpose, answers."""
    with (
        network_namespace() as (namespace, addresses),
        socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as open_,
    ):
        probe = (
            "import socket, sys\n"
            "for address in sys.argv[2:]:\n"
            "    for port in sys.argv[1].split(','):\n"
            "        try:\n"
            "            socket.create_connection((address, int(port)), timeout=3).close()\n"
            "            print(address, port)\n"
            "        except OSError:\n"
            "            pass\n"
        )
        control_port = open_.getsockname()[1]
        targets = ",".join(map(str, [*ports, control_port]))
        answered = subprocess.run(
            ["ip", "netns", "exec", namespace, "python3", "-c", probe, targets, *addresses],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    control = {f"{address} {control_port}" for address in addresses}
    assert control <= set(answered), f"the namespace reaches nothing, not even a socket on every interface: {answered}"
    assert set(filter(None, answered)) == control, f"answered from another network: {set(answered) - control}"


@contextlib.contextmanager
def network_namespace() -> Iterator[tuple[str, list[str]]]:
    """A network namespace and a veth pair with addresses of their own; yields its name and this side's addresses."""
    suffix = secrets.token_hex(3)
    namespace, here, there = f"tandem-{suffix}", f"th{suffix}", f"tn{suffix}"
    octet = secrets.randbelow(200) + 20
    v4 = ipaddress.ip_network(f"10.{octet}.{secrets.randbelow(250)}.0/30")
    v6 = ipaddress.ip_network(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}::/64")
    host4, guest4 = list(v4.hosts())
    host6, guest6 = v6[1], v6[2]
    made = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"the kernel refuses a network namespace (`ip netns add`: {made.stderr.strip()})")
    try:
        for command in (
            f"ip link add {here} type veth peer name {there}",
            f"ip link set {there} netns {namespace}",
            f"ip addr add {host4}/30 dev {here}",
            f"ip addr add {host6}/64 dev {here} nodad",
            f"ip link set {here} up",
            f"ip netns exec {namespace} ip addr add {guest4}/30 dev {there}",
            f"ip netns exec {namespace} ip addr add {guest6}/64 dev {there} nodad",
            f"ip netns exec {namespace} ip link set {there} up",
        ):
            subprocess.run(command.split(), check=True, capture_output=True)
        yield namespace, [str(host4), str(host6)]
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _alive(terminal: Terminal) -> bool:
    if terminal.popen.poll() is not None:
        raise RuntimeError(f"make run exited with {terminal.popen.returncode}:\n{terminal.tail()}")
    return True


def _healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/v1.0/healthz").status_code == 204


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill(terminal: Terminal) -> None:
    """Whatever a failed test left of the stack."""
    for pid in terminal.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    os.close(terminal.master)

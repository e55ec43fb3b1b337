"""Images built by `make image` (buildah), started the way a container platform starts them.

No Docker daemon runs here, and podman's runtimes cannot set a container's limits in this
sandbox, so this starts an image itself, keeping what the tests check of a real runtime:

- the image's root filesystem, read-only (docker run --read-only), with a tmpfs at /tmp and the
  volumes given (a cache directory, a registry);
- new mount and PID namespaces: the image's command is PID 1, so SIGTERM reaches it as
  `docker stop` sends it (PID 1 gets a signal only if it handles it);
- the image's user, working directory, environment, entry point and command, from its config;
- the host's network: a port it listens on is reached on loopback, and it reaches loopback
  services (moto's S3, RunPod's job API, Lambda's Runtime API served by the tests);
- its HEALTHCHECK, run inside it (nsenter) as the runtime would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from containers import build as image_build

ROOT = Path(__file__).resolve().parent.parent

DEVICES = ("null", "zero", "random", "urandom", "full", "tty")


def why_not_here() -> str | None:
    """Why images cannot be built and started here, or None when they can."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "starting an image here takes root (namespaces, mounts) on Linux"
    for tool in ("buildah", "unshare", "nsenter", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs buildah where apt-get can)"
    namespaces = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True, check=False
    )
    if namespaces.returncode != 0:
        return f"this machine refuses new mount and PID namespaces: {namespaces.stderr!r}"
    return None


def checkout_copy(into: Path) -> Path:
    """The tracked files of this checkout (what a fresh clone builds from), in `into`."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str]
    user: str
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str] | None  # the command of HEALTHCHECK CMD [...]


def buildah(*args: str) -> str:
    """buildah as the image builder runs it, its output returned."""
    return image_build.buildah(*args, capture=True)


def image_config(tag: str) -> ImageConfig:
    inspected = json.loads(buildah("inspect", "--type", "image", tag))
    config = inspected["Docker"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    health = (config.get("Healthcheck") or {}).get("Test")
    return ImageConfig(
        env=env,
        user=config.get("User") or "0",
        workdir=config.get("WorkingDir") or "/",
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        healthcheck=health[1:] if health and health[0] == "CMD" else None,
    )


def pushed_blobs(tag: str, work: Path) -> Iterator[Path]:
    """Every blob a registry would get of the image: each layer (as an uncompressed tar, with
    the files a later layer deletes), its config and history, its manifest."""
    archive = work / "pushed"
    buildah("push", "--disable-compression", tag, f"oci:{archive}")
    try:
        yield from (blob for blob in (archive / "blobs").rglob("*") if blob.is_file())
    finally:
        shutil.rmtree(archive, ignore_errors=True)


@dataclass
class Container:
    process: subprocess.Popen  # `unshare`, whose child is the container's PID 1
    config: ImageConfig
    env: dict[str, str]
    started: float  # perf_counter() when it was started
    log: IO[bytes]
    name: str

    @property
    def pid1(self) -> int:
        """The host's pid of the container's PID 1 (unshare's only child)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            with contextlib.suppress(OSError):
                found = children.read_text().split()
                if found:
                    return int(found[0])
            time.sleep(0.01)
        raise RuntimeError("the container's PID 1 did not start")

    def uid(self) -> int:
        status = Path(f"/proc/{self.pid1}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])

    def exec(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """A command inside the running container (its namespaces, root, user and env)."""
        uid = self.config.user.split(":")[0]
        env = [f"{k}={v}" for k, v in self.env.items()]
        command = [
            "nsenter", "-t", str(self.pid1), "-m", "-p", "-r", "-w", "-S", uid, "-G", uid,
            "/usr/bin/env", "-i", *env, *argv,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def healthcheck(self) -> subprocess.CompletedProcess:
        assert self.config.healthcheck, "the image has no HEALTHCHECK"
        return self.exec(self.config.healthcheck)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """`docker stop`: SIGTERM to PID 1, SIGKILL after `timeout`. Returns the exit status
        (-9: killed) and the seconds it took."""
        started = time.perf_counter()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.pid1, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, RuntimeError):
                    os.kill(self.pid1, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode, time.perf_counter() - started

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


def first_answer(url: str, box: Container, timeout: float = 90) -> Any:
    """GET `url` until the container answers (an httpx response); fails at once if it exits."""
    import httpx
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.process.poll() is not None:
            pytest.fail(f"the container exited ({box.process.returncode}):\n{box.output()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=5)
        time.sleep(0.01)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{box.output()}")


def _mount_script(
    root: Path, config: ImageConfig, env: Mapping[str, str], volumes: Mapping[str, str],
    argv: Sequence[str],
) -> str:  # fmt: skip
    """What runs in the new namespaces as root: the mounts, then the image's command as its
    user, by exec all the way down, so that command is PID 1."""
    r = shlex.quote(str(root))
    lines = ["set -e", f"mount --bind {r} {r}", f"mount -t proc proc {r}/proc"]
    lines += [f"mount -t tmpfs -o mode=755 tmpfs {r}/dev", f"mkdir -p {r}/dev/shm"]
    lines += [f"mount -t tmpfs -o mode=1777 tmpfs {r}/dev/shm"]
    for device in DEVICES:
        lines += [f"touch {r}/dev/{device}", f"mount --bind /dev/{device} {r}/dev/{device}"]
    lines += [f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp"]
    for host, inside in volumes.items():
        target = shlex.quote(str(root) + inside)
        lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(host)} {target}"]
    lines += [f"mount -o remount,bind,ro {r}"]
    uid = config.user.split(":")[0]
    variables = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    command = " ".join(shlex.quote(part) for part in argv)
    lines += [
        f"exec chroot --userspec={uid}:{uid} {r} /usr/bin/env -i {variables} "
        f"/bin/sh -c {shlex.quote('cd ' + shlex.quote(config.workdir) + ' && exec ' + command)}"
    ]
    return "\n".join(lines)


def _home(root: Path, user: str) -> str:
    """HOME as a runtime sets it: the user's home in the image's /etc/passwd."""
    uid = user.split(":")[0]
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 5 and uid in (fields[0], fields[2]):
            return fields[5]
    return "/"


@contextlib.contextmanager
def started(
    tag: str,
    env: Mapping[str, str] = {},  # noqa: B006 (read only)
    volumes: Mapping[str, str] = {},  # noqa: B006
    command: Sequence[str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[Container]:
    """The image running, until the block ends (then stopped as `docker stop` stops it)."""
    config = image_config(tag)
    name = buildah("from", "--pull-never", tag)
    try:
        root = Path(buildah("mount", name))
        for host in volumes:
            os.chmod(host, 0o777)  # the image's user writes there, as to a volume it owns
        full_env = {"HOME": _home(root, config.user), **config.env, **env}
        argv = config.entrypoint + (list(command) if command is not None else config.cmd)
        script = _mount_script(root, config, full_env, volumes, argv)
        log_dir = log_dir or Path("/tmp")
        log = open(log_dir / f"{name}.log", "w+b")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
             "/bin/sh", "-c", script],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        container = Container(process, config, full_env, time.perf_counter(), log, name)
        try:
            yield container
        finally:
            container.stop()
            log.close()
    finally:
        with contextlib.suppress(image_build.BuildError):
            buildah("umount", name)
        with contextlib.suppress(image_build.BuildError):
            buildah("rm", name)

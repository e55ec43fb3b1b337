"""Dockerfile.gpu, containers/ and template.yaml, checked without building an image or an AWS
account: every stage, target, entry point and install command they name exists and is the
project's own. tests/e2e/test_container_images.py builds and starts the CPU text images."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from containers import build as image_build
from containers import requirements

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STAGES = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M))


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub) as plain values."""


CfnLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    ),
)
TEMPLATE = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
FUNCTIONS = {
    name: resource
    for name, resource in TEMPLATE["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}


def test_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    template = str(ROOT / "template.yaml")
    result = subprocess.run([str(cfn_lint), template], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint():
    """Every stage of both flavours, the GPU's CUDA steps included (no GPU builds them here)."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile.gpu")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_platform_target_exists():
    assert set(requirements.PLATFORM_EXTRAS) == set(image_build.TARGETS)
    assert {"deps", "build", "models", "runtime", *image_build.TARGETS} <= STAGES


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_lambda_functions_build_the_cpu_flavour_of_a_real_target(name):
    metadata = FUNCTIONS[name]["Metadata"]
    assert metadata["Dockerfile"] == "Dockerfile.gpu" and metadata["DockerBuildTarget"] in STAGES
    assert metadata["DockerBuildTarget"] in ("lambda", "lambda-stream")
    args = metadata["DockerBuildArgs"]
    assert args["FAMILY"] in requirements.FAMILIES
    # Lambda has no GPU and no libcuda: a CUDA build could not load, and would fill its 10 GB.
    assert args["FLAVOUR"] == "cpu"
    assert args["BUILD_BASE"] == args["RUNTIME_BASE"] == image_build.DOCKER_CPU_BASE
    assert set(args) == {"FAMILY", "FLAVOUR", "BUILD_BASE", "RUNTIME_BASE"}
    assert FUNCTIONS[name]["Properties"]["PackageType"] == "Image"


def test_bases_are_build_arguments_defaulting_to_cuda():
    assert re.search(r"^ARG BUILD_BASE=nvidia/cuda:\S+-devel-", DOCKERFILE, re.M)
    assert re.search(r"^ARG RUNTIME_BASE=nvidia/cuda:\S+-runtime-", DOCKERFILE, re.M)
    assert "FROM ${BUILD_BASE} AS deps" in DOCKERFILE
    assert "FROM ${RUNTIME_BASE} AS runtime" in DOCKERFILE


def test_entry_points_import():
    from adapters import aws_lambda, runpod_worker

    assert callable(aws_lambda.handler) and callable(runpod_worker.main)
    assert 'CMD ["adapters.aws_lambda.handler"]' in DOCKERFILE
    assert 'CMD ["python", "-m", "adapters.runpod_worker"]' in DOCKERFILE
    commands = {
        f["Properties"].get("ImageConfig", {}).get("Command", [None])[0] for f in FUNCTIONS.values()
    }
    for command in commands - {None}:
        module, _, attribute = command.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attribute))
    assert PYPROJECT["project"]["scripts"]["stratus"] == "adapters.cli:main"
    assert 'CMD ["stratus", "serve"]' in DOCKERFILE
    assert (
        'HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["stratus", "health"]'
        in (DOCKERFILE)
    )


@pytest.mark.parametrize("flavour", requirements.FLAVOURS)
@pytest.mark.parametrize("family", requirements.FAMILIES)
def test_every_family_installs_the_projects_own_extras(family, flavour):
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert set(requirements.extras(family, flavour)) <= extras
    for target in image_build.TARGETS:
        assert set(requirements.PLATFORM_EXTRAS[target]) <= extras
    # The GPU engines only where a GPU is: exllamav2, and Coqui's CUDA torch family.
    gpu_only = {"exllamav2", "coqui"}
    assert not gpu_only & set(requirements.extras(family, "cpu"))


def test_images_build_what_make_setup_builds_and_tests():
    llama = re.search(r"LLAMA_CPP_VERSION := (\S+)", MAKEFILE)[1]
    assert f"ARG LLAMA_CPP_VERSION={llama}" in DOCKERFILE
    portable = re.search(r"LLAMA_CMAKE_ARGS := (.+)", MAKEFILE)[1].strip()
    assert f'CMAKE_ARGS="{portable}"' in DOCKERFILE  # the CPU flavour's flags are setup's
    torch = re.search(r"TORCH_VERSION := (\S+)", MAKEFILE)[1]
    assert f"ARG CPU_TORCH_VERSION={torch}" in DOCKERFILE
    for family, packages in requirements.EMBEDDED_MODELS.items():
        for package in packages:
            assert package in MAKEFILE, (family, package)  # the versions setup installs


def test_the_gpu_audio_image_carries_coqui_with_the_tested_torch():
    assert "coqui" in requirements.extras("audio", "gpu")
    assert "coqui" not in requirements.extras("audio", "gpu", coqui=False)
    for package in ("torch", "torchaudio", "torchcodec"):
        version = re.search(rf"COQUI_{package.upper()}_VERSION := (\S+)", MAKEFILE)[1]
        assert f'"{package}=={version}"' in DOCKERFILE, package


def test_copied_sources_exist():
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_images_run_as_non_root():
    assert "USER stratus" not in DOCKERFILE  # numeric: runAsNonRoot can check it
    for target in ("http", "runpod", "lambda"):  # the others are FROM http
        stage = DOCKERFILE.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "\nUSER 10001\n" in stage, target


def test_every_package_of_the_tree_is_installed():
    """The installed package (the images') holds every package of the four floors: a list of
    packages once missed layers.tool_formats, and an installed Stratus could not chat."""
    from setuptools import find_packages

    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for floor in ("adapters", "common", "handlers", "layers")
        for init in (ROOT / floor).rglob("__init__.py")
    }
    assert on_disk and on_disk == found


@pytest.mark.parametrize(
    "argv, named",
    [(["text", "tpu"], "cpu, gpu"), (["video", "cpu"], "text, embeddings, audio, images")],
)
def test_an_unknown_family_or_flavour_is_refused_naming_the_choices(argv, named):
    script = ROOT / "containers" / "requirements.py"
    result = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert result.returncode == 2 and named in result.stderr
    with pytest.raises(image_build.BuildError, match="choose http, runpod-lb"):
        image_build.check("text", "cpu", "k8s")


def test_setup_installs_the_engine_of_every_built_in_model():
    from common.registry import load_registry
    from layers import _ENGINES

    installed = re.search(r"pip install --quiet -e '\.\[([^\]]+)\]'", MAKEFILE)[1].split(",")
    for config in load_registry().models:
        assert _ENGINES[config.backend][2] in installed, config.name


def test_every_operation_is_routed_to_a_lambda_function():
    """API Gateway reaches only the routes template.yaml lists: each operation of the table,
    under /v1 or bare (a path parameter matches any of its names)."""
    import re

    from adapters.operations import OPERATIONS

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    routed = {
        (event["Properties"]["Method"], shape(event["Properties"]["Path"]))
        for resource in TEMPLATE["Resources"].values()
        for event in (resource.get("Properties", {}).get("Events") or {}).values()
        if event.get("Type") == "HttpApi"
    }
    missing = [
        f"{op.method} {op.path}"
        for op in OPERATIONS
        if not {(op.method, shape("/v1" + op.path)), (op.method, shape(op.path))} & routed
    ]
    assert not missing

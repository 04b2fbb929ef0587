"""`terraform validate` and `terraform plan` of terraform/, offline, against the pinned providers' schemas.

The providers are a stand-in (infra/terraform-standin/standin_provider.py) that serves the schemas of
hashicorp/google 6.14.1 and hashicorp/archive 2.7.0, derived from the pinned @cdktf provider packages, so a
misspelled argument, a missing required one or a reference to an attribute that does not exist fails here
and not in Cloud Build's plan step. With TERRAFORM_REAL_PROVIDERS=1 (Cloud Build, where the registry is
reachable) the same tests run against the real providers. Nothing is applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
STANDIN = REPO / "infra" / "terraform-standin"
STANDIN_PYTHON = REPO / ".venv-standin" / "bin" / "python"
SCHEMA_CACHE = REPO / "build" / "terraform-standin"
PACKAGES = {"google": "@cdktf/provider-google", "archive": "@cdktf/provider-archive"}
PINNED = {"google": "6.14.1", "archive": "2.7.0"}  # terraform/versions.tf
REAL_PROVIDERS = os.environ.get("TERRAFORM_REAL_PROVIDERS") == "1"
PLAN = ["plan", "-var-file=terraform.tfvars.example", "-input=false", "-lock=false", "-refresh=false"]

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="needs the terraform CLI")


def schema_file(provider: str) -> Path:
    """The provider's derived schema, cached per package version and stand-in source."""
    package = STANDIN / "node_modules" / PACKAGES[provider]
    assert package.is_dir(), f"{package.relative_to(REPO)} is missing: run `make setup`"
    assert STANDIN_PYTHON.exists(), "the stand-in's venv is missing: run `make setup`"
    version = json.loads((package / "package.json").read_text())["version"]
    source = hashlib.sha256((STANDIN / "standin_provider.py").read_bytes()).hexdigest()[:12]
    cached = SCHEMA_CACHE / f"{provider}-{version}-{source}.pb"
    if not cached.exists():
        for stale in SCHEMA_CACHE.glob(f"{provider}-*.pb"):
            stale.unlink()
        subprocess.run(
            [str(STANDIN_PYTHON), str(STANDIN / "standin_provider.py"), "build", str(package), str(cached)], check=True
        )
    return cached


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for terraform: the stand-in providers through a CLI config, or the real ones."""
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    if REAL_PROVIDERS:  # downloaded once for all the module copies
        cache = tmp_path_factory.mktemp("terraform-plugin-cache")
        return {**env, "TF_PLUGIN_CACHE_DIR": str(cache), "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE": "1"}
    root = tmp_path_factory.mktemp("terraform-standin")
    version = subprocess.run(["terraform", "version", "-json"], capture_output=True, text=True, check=True)
    platform = json.loads(version.stdout)["platform"]
    overrides = []
    for provider in PACKAGES:
        script = STANDIN / "standin_provider.py"
        # HOME: the tf library caches its plugin TLS certificate under ~/.cache; keep it in the temp dir.
        launcher = f'#!/bin/sh\nHOME="{root}" exec "{STANDIN_PYTHON}" "{script}" serve "{schema_file(provider)}" "$@"\n'
        # dev_overrides serve the launcher; the mirror lets `terraform init` pick the pinned version offline.
        mirrored = root / "mirror" / "registry.terraform.io" / "hashicorp" / provider / PINNED[provider] / platform
        for directory in (root / provider, mirrored):
            directory.mkdir(parents=True)
            (directory / f"terraform-provider-{provider}").write_text(launcher)
            (directory / f"terraform-provider-{provider}").chmod(0o755)
        overrides.append(f'    "hashicorp/{provider}" = "{root / provider}"')
    names = ", ".join(f'"registry.terraform.io/hashicorp/{p}"' for p in PACKAGES)
    config = root / "terraform.tfrc"
    config.write_text(
        "provider_installation {\n  dev_overrides {\n" + "\n".join(overrides) + "\n  }\n"
        f'  filesystem_mirror {{\n    path    = "{root / "mirror"}"\n    include = [{names}]\n  }}\n'
        f"  direct {{\n    exclude = [{names}]\n  }}\n}}\n"
    )
    return {**env, "TF_CLI_CONFIG_FILE": str(config)}


def module_copy(dest: Path, extra: str = "") -> Path:
    """terraform/ with what it reads by relative path, a local backend instead of gcs, and `extra` as a file."""
    module = dest / "terraform"
    module.mkdir(parents=True)
    for path in [*TERRAFORM.glob("*.tf"), TERRAFORM / "firestore.rules", TERRAFORM / "terraform.tfvars.example"]:
        shutil.copy(path, module / path.name)
    (dest / "infra").mkdir()
    shutil.copy(REPO / "infra" / "functions.yaml", dest / "infra" / "functions.yaml")  # var.catalogue_path
    (dest / "functions").symlink_to(REPO / "functions", target_is_directory=True)  # var.source_dir
    (module / "zz_backend_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
    if extra:
        (module / "zz_extra.tf").write_text(extra)
    return module


def run_terraform(module: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["terraform", *args, "-no-color"], cwd=module, env=env, capture_output=True, text=True, timeout=240
    )


def initialized(module: Path, env: dict[str, str]) -> Path:
    result = run_terraform(module, env, "init", "-input=false")
    assert result.returncode == 0, result.stdout + result.stderr
    return module


def test_validate_and_plan_pass_against_the_pinned_providers(tmp_path: Path, terraform_env: dict[str, str]) -> None:
    module = initialized(module_copy(tmp_path), terraform_env)
    validate = run_terraform(module, terraform_env, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    plan = run_terraform(module, terraform_env, *PLAN)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "google_cloudfunctions2_function.function" in plan.stdout
    assert "to add, 0 to change, 0 to destroy" in plan.stdout


NEGATIVE_BUCKET = """
resource "google_storage_bucket" "negative" {
  name     = "negative-test"
  %s
}
"""


@pytest.mark.parametrize(
    ("extra", "errors"),
    [
        pytest.param(
            NEGATIVE_BUCKET % "location = var.region\n  uniform_bucket_level_acess = true",
            ["Unsupported argument", 'An argument named "uniform_bucket_level_acess" is not expected here'],
            id="misspelled-argument",
        ),
        pytest.param(
            NEGATIVE_BUCKET % "uniform_bucket_level_access = true",
            ["Missing required argument", 'The argument "location" is required'],
            id="missing-required-argument",
        ),
        pytest.param(
            NEGATIVE_BUCKET % "location = var.region"
            + 'output "negative" {\n  value = google_storage_bucket.negative.self_lnk\n}\n',
            ["Unsupported attribute", 'no argument, nested block, or exported attribute named "self_lnk"'],
            id="attribute-that-does-not-exist",
        ),
        pytest.param(
            NEGATIVE_BUCKET % "location = var.region\n  versioning = true",
            [
                "Unsupported argument",
                'An argument named "versioning" is not expected here. Did you mean to define a block',
            ],
            id="block-written-as-argument",
        ),
    ],
)
def test_schema_errors_fail_validate_and_plan(
    tmp_path: Path, terraform_env: dict[str, str], extra: str, errors: list[str]
) -> None:
    module = initialized(module_copy(tmp_path, extra), terraform_env)
    for result in (run_terraform(module, terraform_env, "validate"), run_terraform(module, terraform_env, *PLAN)):
        assert result.returncode != 0, result.stdout
        message = " ".join(result.stderr.split())  # terraform wraps its messages
        for error in errors:
            assert error in message, result.stderr


def test_the_schema_packages_are_generated_from_the_pinned_provider_versions() -> None:
    versions = (TERRAFORM / "versions.tf").read_text()
    package_json = json.loads((STANDIN / "package.json").read_text())
    for provider, package in PACKAGES.items():
        assert f'source  = "hashicorp/{provider}"\n      version = "= {PINNED[provider]}"' in versions, provider
        installed = json.loads((STANDIN / "node_modules" / package / "package.json").read_text())
        assert installed["version"] == package_json["dependencies"][package]
        assert installed["cdktf"]["provider"] == {
            "name": f"registry.terraform.io/hashicorp/{provider}",
            "version": PINNED[provider],
        }

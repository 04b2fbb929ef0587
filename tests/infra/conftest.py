"""The Terraform, parsed once, in a shape tests can read.

python-hcl2 keeps string quotes and wraps expressions in ${...}; `plain()`
turns both into the text a reader of the .tf files would see.
"""

from __future__ import annotations

from pathlib import Path

import hcl2
import pytest
import yaml

from firestore_indexes import plain_hcl as plain  # the local stack's reader of the same files

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"


class Terraform:
    def __init__(self, files: dict[str, dict]) -> None:
        self.files = files
        self.resources: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.data: dict[tuple[str, str], dict] = {}
        for content in files.values():
            for block in content.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(rtype, name)] = body
            for block in content.get("data", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.data[(rtype, name)] = body
            for block in content.get("variable", []):
                self.variables.update(block)

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def resource(self, rtype: str, name: str) -> dict:
        return self.resources[(rtype, name)]

    @staticmethod
    def block(body: dict, name: str) -> dict:
        """The single nested block `name` of a resource body."""
        found = body.get(name)
        assert isinstance(found, list), f"expected a {name} block"
        assert len(found) == 1, f"expected one {name} block"
        return found[0]


@pytest.fixture(scope="session")
def terraform() -> Terraform:
    files = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            files[path.name] = plain(hcl2.load(handle))
    assert files, "terraform/ has no .tf files"
    return Terraform(files)


@pytest.fixture(scope="session")
def terraform_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")))


@pytest.fixture(scope="session")
def catalogue() -> dict:
    raw = yaml.safe_load((REPO / "infra" / "functions.yaml").read_text())
    return {name: {**raw["defaults"], **spec} for name, spec in raw["functions"].items()}

"""A schema-only stand-in for the hashicorp/google and hashicorp/archive providers.

Terraform validates and plans against provider schemas it gets over the plugin
protocol (v6). This module derives those schemas from the jsii assemblies of the
pinned `@cdktf/provider-google` and `@cdktf/provider-archive` npm packages, which
are generated from exactly the provider versions terraform/versions.tf pins, and
serves them with the `tf` library's plugin runner, so `terraform validate` and
`terraform plan` run offline against the real argument names, blocks and
attribute types. It never creates anything: plans mark unset computed attributes
unknown, data sources return their configuration with computed attributes filled.

    python standin_provider.py build PACKAGE_DIR SCHEMA_FILE   # derive and cache a schema
    python standin_provider.py serve SCHEMA_FILE               # run as terraform-provider-*
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

Json = Any
Block = dict[str, Any]

META_ARGUMENTS = {"connection", "count", "dependsOn", "forEach", "lifecycle", "provider", "provisioners"}
REPRESENTS = re.compile(
    r"Represents a \{@link https://registry\.terraform\.io/providers/[^ ]+/docs/([a-z-]+)/\w+ (\w+)\}"
)
ANCHOR = re.compile(r"\{@link https://registry\.terraform\.io/providers/[^ #}]+#(\w+) ")
PRIMITIVES = {"string": "string", "number": "number", "boolean": "bool", "any": "dynamic", "json": "dynamic"}
CDKTF_TYPES: dict[str, Json] = {
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
    "cdktf.AnyMap": ["map", "dynamic"],
    "cdktf.StringMapList": ["list", ["map", "string"]],
    "cdktf.NumberMapList": ["list", ["map", "number"]],
    "cdktf.BooleanMapList": ["list", ["map", "bool"]],
    "cdktf.AnyMapList": ["list", ["map", "dynamic"]],
    "cdktf.StringListList": ["list", ["list", "string"]],
    "cdktf.NumberListList": ["list", ["list", "number"]],
    "cdktf.BooleanList": ["list", "bool"],
    "cdktf.IResolvable": "dynamic",
}


def camelize(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Module:
    """What one generated lib/<name>/index.js adds to the jsii: names, sets and HCL kinds."""

    def __init__(self, text: str) -> None:
        self.snake: dict[str, str] = {}
        for name in set(re.findall(r"['\"]([a-z][a-z0-9_]*)['\"]", text)):
            self.snake.setdefault(camelize(name), name)
        self.sets = set(re.findall(r"new \w+List\(this, \"(\w+)\", true\)", text))
        self.sets |= set(re.findall(r"Fn\.tolist\(this\.get\w+Attribute\('(\w+)'\)\)", text))
        self.hcl: dict[str, dict[str, tuple[bool, str]]] = {}
        bodies = re.findall(r"\nfunction (\w+)ToHclTerraform\(struct\) \{(.*?)\n\}\n", text, re.DOTALL)
        bodies += [("", body) for body in re.findall(r"synthesizeHclAttributes\(\) \{(.*?)\n    \}\n", text, re.DOTALL)]
        for owner, body in bodies:
            entries = re.findall(
                r"\n\s+\"?(\w+)\"?: \{\n\s+value: .*?\n\s+isBlock: (true|false),\n\s+type: \"(\w+)\"", body
            )
            self.hcl[owner or ""] = {name: (is_block == "true", kind) for name, is_block, kind in entries}

    def name(self, camel: str) -> str:
        return self.snake.get(camel) or re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


class Assembly:
    def __init__(self, package_dir: Path) -> None:
        self.dir = package_dir
        raw = json.loads((package_dir / ".jsii").read_text())
        if raw.get("schema") == "jsii/file-redirect":
            data = (package_dir / raw["filename"]).read_bytes()
            raw = json.loads(gzip.decompress(data) if raw.get("compression") == "gzip" else data)
        self.types: dict[str, dict] = raw["types"]
        self.name: str = raw["name"]
        self.modules: dict[str, Module] = {}

    def module(self, jsii_type: dict) -> Module:
        source = jsii_type["locationInModule"]["filename"]
        if source not in self.modules:
            js = self.dir / re.sub(r"^src/(.*)\.ts$", r"lib/\1.js", source)
            self.modules[source] = Module(js.read_text() if js.exists() else "")
        return self.modules[source]

    # -- types ----------------------------------------------------------------------------------------------------

    def value_type(self, ref: dict, module: Module, name: str) -> Json:
        """The cty type (JSON form) of a jsii type reference of an attribute."""
        if "union" in ref:
            members = [t for t in ref["union"]["types"] if t.get("fqn") != "cdktf.IResolvable"]
            return self.value_type(members[0], module, name) if members else "dynamic"
        if "primitive" in ref:
            return PRIMITIVES.get(ref["primitive"], "dynamic")
        if "collection" in ref:
            element = self.value_type(ref["collection"]["elementtype"], module, name)
            if ref["collection"]["kind"] == "map":
                return ["map", element]
            return ["set" if name in module.sets else "list", element]
        fqn = ref["fqn"]
        if fqn in CDKTF_TYPES:
            return CDKTF_TYPES[fqn]
        target = self.types.get(fqn, {})
        if fqn.endswith("List") and fqn[:-4] + "OutputReference" in self.types:
            element = self.object_type(self.types[fqn[:-4] + "OutputReference"])
            return ["set" if name in module.sets else "list", element]
        if fqn.endswith("OutputReference"):
            return ["list", self.object_type(target)]
        if target.get("datatype"):
            return [
                "object",
                {module.name(p["name"]): self.value_type(p["type"], module, "") for p in target["properties"]},
            ]
        return "dynamic"

    def object_type(self, reference_class: dict) -> Json:
        module = self.module(reference_class)
        return [
            "object",
            {
                module.name(p["name"]): self.value_type(p["type"], module, module.name(p["name"]))
                for p in getters(reference_class)
            },
        ]

    # -- blocks ---------------------------------------------------------------------------------------------------

    def block(self, struct_fqn: str, reader_fqn: str | None, computed_optionals: bool) -> Block:
        """A schema block from a config struct and the class (resource or output reference) that reads it back."""
        struct = self.types[struct_fqn]
        module = self.module(struct)
        owner = (
            ""
            if reader_fqn and not reader_fqn.endswith("OutputReference")
            else struct["name"][:1].lower() + struct["name"][1:]
        )
        hcl = module.hcl.get(owner, {})
        attributes: dict[str, dict] = {}
        block_types: dict[str, dict] = {}
        configurable = set()
        for prop in struct.get("properties", []):
            if prop["name"] in META_ARGUMENTS and struct_fqn.endswith("Config"):
                continue
            configurable.add(prop["name"])
            docs = prop.get("docs", {})
            anchor = ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
            name = anchor.group(1) if anchor else module.name(prop["name"])
            is_block, kind = hcl.get(name, (False, ""))
            nested = self.struct_of(prop["type"])
            if nested is not None and (is_block or (kind == "" and docs.get("summary", "").endswith(" block."))):
                reader = nested + "OutputReference" if nested + "OutputReference" in self.types else None
                single = "collection" not in json.dumps(prop["type"])
                mode = "single" if kind == "struct" else "set" if kind == "set" or name in module.sets else "list"
                entry: dict[str, Any] = {
                    "nesting_mode": mode,
                    "block": self.block(nested, reader, computed_optionals),
                }
                if not prop.get("optional"):
                    entry["min_items"] = 1
                if single and mode != "single":
                    entry["max_items"] = 1
                block_types[name] = entry
                continue
            value = self.value_type(prop["type"], module, name)
            if kind == "set" and isinstance(value, list) and value[0] == "list":
                value = ["set", value[1]]
            if prop.get("optional"):
                attributes[name] = {"type": value, "optional": True, "computed": computed_optionals or name == "id"}
            else:
                attributes[name] = {"type": value, "required": True}
        if reader_fqn is not None:
            reader = self.types[reader_fqn]
            reader_module = self.module(reader)
            for prop in getters(reader):
                if prop["name"] in configurable:
                    continue
                name = reader_module.name(prop["name"])
                if name in attributes or name in block_types:
                    continue
                attributes[name] = {"type": self.value_type(prop["type"], reader_module, name), "computed": True}
        return {"attributes": attributes, "block_types": block_types}

    def struct_of(self, ref: dict) -> str | None:
        """The provider's config struct a property takes, directly or as a list of them."""
        text = json.dumps(ref)
        for fqn in re.findall(r'"fqn": "([^"]+)"', text):
            if fqn.startswith(self.name + ".") and self.types.get(fqn, {}).get("datatype"):
                return fqn
        return None

    def schemas(self) -> dict[str, Any]:
        resources: dict[str, Block] = {}
        data_sources: dict[str, Block] = {}
        provider: Block = {"attributes": {}, "block_types": {}}
        for fqn, jsii_type in self.types.items():
            if jsii_type.get("kind") != "class":
                continue
            config = [p for p in jsii_type.get("initializer", {}).get("parameters", []) if p["name"] == "config"]
            if not config:
                continue
            config_fqn = config[0]["type"]["fqn"]
            if fqn.endswith("Provider") and jsii_type.get("namespace") == "provider":
                provider = self.block(config_fqn, None, computed_optionals=False)
                provider["attributes"].pop("alias", None)
                continue
            represents = REPRESENTS.search(jsii_type.get("docs", {}).get("summary", ""))
            if not represents:
                continue
            kind, type_name = represents.groups()
            block = self.block(config_fqn, fqn, computed_optionals=True)
            (data_sources if kind == "data-sources" else resources)[type_name] = block
        return {"provider": provider, "resource_schemas": resources, "data_source_schemas": data_sources}


def getters(reference_class: dict) -> list[dict]:
    return [
        p
        for p in reference_class.get("properties", [])
        if not p.get("static")
        and not p["name"].endswith("Input")
        and p["name"] not in ("internalValue", "fqn", "terraformResourceType")
        and not p.get("protected")
    ]


# -- the plugin -------------------------------------------------------------------------------------------------


def to_pb(block: Block) -> Any:
    from tf.gen import tfplugin_pb2 as pb

    modes = {
        "single": pb.Schema.NestedBlock.SINGLE,
        "list": pb.Schema.NestedBlock.LIST,
        "set": pb.Schema.NestedBlock.SET,
    }
    return pb.Schema.Block(
        attributes=[
            pb.Schema.Attribute(
                name=name,
                type=json.dumps(attr["type"]).encode(),
                required=attr.get("required", False),
                optional=attr.get("optional", False),
                computed=attr.get("computed", False),
            )
            for name, attr in sorted(block["attributes"].items())
        ],
        block_types=[
            pb.Schema.NestedBlock(
                type_name=name,
                block=to_pb(nested["block"]),
                nesting=modes[nested["nesting_mode"]],
                min_items=nested.get("min_items", 0),
                max_items=nested.get("max_items", 0),
            )
            for name, nested in sorted(block["block_types"].items())
        ],
    )


def build(package_dir: Path, out: Path) -> None:
    """Derive the provider's schemas and cache them as a serialized GetProviderSchema response."""
    from tf.gen import tfplugin_pb2 as pb

    schemas = Assembly(package_dir).schemas()
    empty = pb.Schema(block=pb.Schema.Block())
    response = pb.GetProviderSchema.Response(
        provider=pb.Schema(block=to_pb(schemas["provider"])),
        provider_meta=empty,
        resource_schemas={name: pb.Schema(block=to_pb(b)) for name, b in schemas["resource_schemas"].items()},
        data_source_schemas={name: pb.Schema(block=to_pb(b)) for name, b in schemas["data_source_schemas"].items()},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(response.SerializeToString())
    partial.replace(out)


def fill(type_json: Json, name: str) -> Any:
    """A plausible known value of a cty type, for a computed attribute of a data source."""
    if type_json == "string":
        return f"standin-{name}"
    if type_json == "number":
        return 1
    if type_json == "bool":
        return False
    if isinstance(type_json, list) and type_json[0] in ("list", "set"):
        return []
    if isinstance(type_json, list) and type_json[0] == "map":
        return {}
    if isinstance(type_json, list) and type_json[0] == "object":
        return {k: fill(v, k) for k, v in type_json[1].items()}
    return None


def archive_outputs(config: dict) -> dict[str, Any]:
    """What archive_file reports about its zip, from the content it would hold (nothing is written)."""
    digest: dict[str, Any] = {}
    files: list[tuple[str, bytes]] = []
    if config.get("source_content") is not None:
        files.append((config.get("source_content_filename") or "content", config["source_content"].encode()))
    if config.get("source_file"):
        files.append((Path(config["source_file"]).name, Path(config["source_file"]).read_bytes()))
    if config.get("source_dir"):
        root = Path(config["source_dir"])
        excludes = config.get("excludes") or []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            excluded = any(Path(relative).match(p.replace("**/", "*/")) or relative == p for p in excludes)
            if not excluded and "__pycache__" not in relative:
                files.append((relative, path.read_bytes()))
    blob = b"".join(name.encode() + b"\0" + data for name, data in files)
    digest["output_sha"] = hashlib.sha1(blob).hexdigest()  # noqa: S324 - the provider's own attribute
    digest["output_sha256"] = hashlib.sha256(blob).hexdigest()
    digest["output_sha512"] = hashlib.sha512(blob).hexdigest()
    digest["output_md5"] = hashlib.md5(blob).hexdigest()  # noqa: S324 - the provider's own attribute
    digest["output_base64_sha256"] = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    digest["output_base64_sha512"] = base64.b64encode(hashlib.sha512(blob).digest()).decode()
    digest["output_size"] = len(blob)
    digest["id"] = digest["output_sha"]
    return digest


def serve(schema_file: Path) -> None:
    import tf.provider
    from tf.gen import tfplugin_pb2 as pb
    from tf.runner import run_provider
    from tf.types import Unknown
    from tf.utils import read_dynamic_value, to_dynamic_value

    response = pb.GetProviderSchema.Response.FromString(schema_file.read_bytes())

    def plan(block: Any, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for attr in block.attributes:
            if attr.computed and value.get(attr.name) is None:
                value[attr.name] = Unknown
        for nested in block.block_types:
            inner = value.get(nested.type_name)
            if isinstance(inner, list):
                value[nested.type_name] = [plan(nested.block, item) for item in inner]
            elif isinstance(inner, dict):
                value[nested.type_name] = plan(nested.block, inner)
        return value

    def read(block: Any, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for attr in block.attributes:
            if attr.computed and value.get(attr.name) is None:
                value[attr.name] = fill(json.loads(attr.type), attr.name)
        for nested in block.block_types:
            inner = value.get(nested.type_name)
            if isinstance(inner, list):
                value[nested.type_name] = [read(nested.block, item) for item in inner]
            elif isinstance(inner, dict):
                value[nested.type_name] = read(nested.block, inner)
        return value

    class Servicer(tf.provider.ProviderServicer):
        def GetProviderSchema(self, request: Any, context: Any) -> Any:
            return response

        def ValidateProviderConfig(self, request: Any, context: Any) -> Any:
            return pb.ValidateProviderConfig.Response()

        def ValidateResourceConfig(self, request: Any, context: Any) -> Any:
            return pb.ValidateResourceConfig.Response()

        def ValidateDataResourceConfig(self, request: Any, context: Any) -> Any:
            return pb.ValidateDataResourceConfig.Response()

        def ConfigureProvider(self, request: Any, context: Any) -> Any:
            return pb.ConfigureProvider.Response()

        def UpgradeResourceState(self, request: Any, context: Any) -> Any:
            return pb.UpgradeResourceState.Response(upgraded_state=pb.DynamicValue(json=request.raw_state.json))

        def ReadResource(self, request: Any, context: Any) -> Any:
            return pb.ReadResource.Response(new_state=request.current_state, private=request.private)

        def PlanResourceChange(self, request: Any, context: Any) -> Any:
            proposed = read_dynamic_value(request.proposed_new_state)
            if proposed is None or read_dynamic_value(request.prior_state) is not None:
                return pb.PlanResourceChange.Response(planned_state=request.proposed_new_state)
            block = response.resource_schemas[request.type_name].block
            return pb.PlanResourceChange.Response(planned_state=to_dynamic_value(plan(block, proposed)))

        def ReadDataSource(self, request: Any, context: Any) -> Any:
            config = read_dynamic_value(request.config)
            if request.type_name == "archive_file":
                config.update(archive_outputs(config))
            block = response.data_source_schemas[request.type_name].block
            return pb.ReadDataSource.Response(state=to_dynamic_value(read(block, config)))

        def ApplyResourceChange(self, request: Any, context: Any) -> Any:
            return pb.ApplyResourceChange.Response(
                diagnostics=[pb.Diagnostic(severity=pb.Diagnostic.ERROR, summary="The stand-in provider only plans")]
            )

    class App:
        def full_name(self) -> str:
            return "registry.terraform.io/hashicorp/standin"

    tf.provider.ProviderServicer = Servicer  # run_provider builds its servicer from this name
    run_provider(App(), sys.argv)  # type: ignore[arg-type]


def main(argv: list[str]) -> None:
    if argv[1:2] == ["build"]:
        build(Path(argv[2]), Path(argv[3]))
    elif argv[1:2] == ["serve"]:
        serve(Path(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

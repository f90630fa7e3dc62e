"""Rebuild the vendored KubeRay JSON schemas from KubeRay's CustomResourceDefinitions.

    python infra/schemas/update.py KUBERAY_CHECKOUT   # a clone of ray-project/kuberay at a tag

Each CRD's `openAPIV3Schema` (version v1) becomes `<kind>-v1.json` in this folder. Objects
that list their properties get `additionalProperties: false` (as Kubernetes' own strict
schemas do), so a misspelt field fails validation instead of being pruned silently by the API
server; objects marked `x-kubernetes-preserve-unknown-fields` stay open.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
HERE = Path(__file__).parent


def strict(node: Any) -> Any:
    """`node` with `additionalProperties: false` on every object that lists its properties."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    closed = "properties" in out and "additionalProperties" not in out
    if closed and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def convert(crd_file: Path) -> tuple[str, dict[str, Any]]:
    crd = yaml.safe_load(crd_file.read_text())
    kind = crd["spec"]["names"]["kind"]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = f"{kind} (ray.io/v1), from KubeRay's CRD {crd_file.name}"
    return f"{kind.lower()}-v1.json", schema


def main(checkout: str) -> None:
    bases = Path(checkout) / "ray-operator" / "config" / "crd" / "bases"
    for name in CRDS:
        out_name, schema = convert(bases / name)
        (HERE / out_name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HERE / out_name}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

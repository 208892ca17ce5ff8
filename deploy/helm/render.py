"""Renders the Kestrel chart with Helm's own template engine (Helm's Go SDK through the
`helm-python-sdk` wheel: no helm binary needed) and validates every manifest.

    python render.py          # writes deploy/kubernetes/*.yaml from the chart
    python render.py --check  # renders every value set, lints, validates, and fails if the
                              # committed manifests differ from the chart's output

Validation: core kinds against the Kubernetes OpenAPI schemas shipped in `kubernetes-validate`
(strict: unknown fields fail), for the oldest and newest Kubernetes versions the chart targets;
the custom resources (KEDA ScaledObject, Prometheus Operator PodMonitor/ServiceMonitor) against
the openAPIV3Schema of their CRDs, vendored in schemas/, with unknown fields failing too.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "kestrel"
OUT = HERE.parent / "kubernetes"
RELEASE, NAMESPACE = "kestrel", "default"
# Oldest with the native preStop sleep action, and the newest the validator ships.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]

# Committed manifest → values file (None: the chart's defaults).
RENDERED = {"kestrel.yaml": None, "kestrel-gpu.yaml": CHART / "ci" / "gpu-values.yaml"}
# Checked only.
CHECKED = [CHART / "ci" / "pvc-hpa-values.yaml"]
# Must fail to render, with this in the message.
INVALID = [
    ({"autoscaling": {"hpa": {"enabled": True}}}, "not both"),
    ({"model": {"id": ""}}, "set model.id or model.pvc.claimName"),
    ({"model": {"pvc": {"claimName": "m"}}}, "model.pvc.path is required"),
]

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}


HEADER = (f"# Rendered from deploy/helm/kestrel by deploy/helm/render.py (release {RELEASE!r}, namespace\n"
          f"# {NAMESPACE!r}); edit the chart and re-render, not this file.\n")


PASSED = []


def ok(what: str):
    PASSED.append(what)
    print(f"ok  {what}")


def render(values: dict | None) -> str:
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    parts = []
    for path in sorted(manifests):
        body = manifests[path].strip()
        if path.endswith("NOTES.txt") or not body:
            continue
        parts.append(f"---\n# Source: {path}\n{body}\n")
    return "".join(parts)


def load_values(path: Path | None) -> dict | None:
    return yaml.safe_load(path.read_text()) if path else None


def strict(schema):
    """The CRD schema with unknown fields rejected (the API server would prune them silently)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    # apiVersion, kind and metadata are checked by the API server, not the CRD schema.
    schema.setdefault("properties", {}).update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
    return schema


def validate(text: str, label: str) -> list[str]:
    """Errors of every manifest in `text`; prints one `ok` line per manifest that passes."""
    errors = []
    docs = [d for d in yaml.safe_load_all(text) if d]
    if not docs:
        return [f"{label}: nothing rendered"]
    for doc in docs:
        name = f"{label}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            schema = strict(json.loads((HERE / "schemas" / CRD_SCHEMAS[key]).read_text()))
            try:
                jsonschema.validate(doc, schema)
            except jsonschema.ValidationError as e:
                errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            else:
                ok(f"{name} (CRD schema)")
            continue
        before = len(errors)
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                errors.append(f"{name}: no Kubernetes {version} schema for {key}")
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{name} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
        if len(errors) == before:
            ok(f"{name} (Kubernetes {', '.join(KUBERNETES_VERSIONS)})")
    return errors


def check() -> int:
    errors = []
    lint = helm.lint(str(CHART), strict=True)
    errors += [f"helm lint: {m['path']}: {m['error']}" for m in lint["messages"] if m["severity"] >= 2]
    errors += [f"helm lint: {e}" for e in lint["errors"]]
    if not errors:
        ok("helm lint --strict")
    for out, values_path in RENDERED.items():
        text = render(load_values(values_path))
        errors += validate(text, out)
        committed = OUT / out
        if not committed.exists() or committed.read_text() != HEADER + text:
            errors.append(f"{committed} is not what the chart renders: run `python {Path(__file__).name}`")
        else:
            ok(f"deploy/kubernetes/{out} is what the chart renders")
    for values_path in CHECKED:
        errors += validate(render(load_values(values_path)), values_path.name)
    for values, message in INVALID:
        try:
            render(values)
            errors.append(f"values {values} rendered; expected a failure naming {message!r}")
        except helm.HelmError as e:
            if message not in str(e):
                errors.append(f"values {values} failed with {e}, not {message!r}")
            else:
                ok(f"values {json.dumps(values)} refused: {message}")
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    sys.stdout.flush()
    print(f"chart: {len(PASSED)} passed, {len(errors)} failed")
    return 1 if errors else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.check:
        return check()
    OUT.mkdir(parents=True, exist_ok=True)
    for out, values_path in RENDERED.items():
        (OUT / out).write_text(HEADER + render(load_values(values_path)))
        print(f"wrote {OUT / out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

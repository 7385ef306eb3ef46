"""Lints (strict) and renders the spansink chart with the Helm SDK (PyPI helm-python-sdk).

Usage: helm_render.py CHART_DIR VALUES_JSON NAMESPACE
Prints one JSON object: {"lint": {...}, "manifests": {template: text}} or {"error": "..."}.
Used by operator/tests/chart.rs; not a tool for people.
"""
import json
import sys

import helm_python as helm


def main() -> None:
    chart, values_json, namespace = sys.argv[1], sys.argv[2], sys.argv[3]
    values = json.loads(values_json)
    try:
        lint = helm.lint(chart, values, strict=True, namespace=namespace)
        manifests = helm.Chart.load(chart).render(values, name="spansink", namespace=namespace, is_install=True)
    except helm.HelmError as e:
        print(json.dumps({"error": str(e)}))
        return
    print(json.dumps({"lint": lint, "manifests": manifests}))


if __name__ == "__main__":
    main()

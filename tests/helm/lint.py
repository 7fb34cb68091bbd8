"""Checks the Helm chart with the real Helm library (helm-sdkpy; no helm binary is available here).

1. `helm lint helm/keyward` reports no error.
2. A values file that breaks values.schema.json (a string replica count, an unknown failurePolicy) is refused.
Usage: python3 tests/helm/lint.py <dir where helm-sdkpy is installed>
"""
import asyncio
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, sys.argv[1])
import helm_sdkpy  # noqa: E402

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "keyward"
ERROR = 3


def lint(path):
    config = helm_sdkpy.actions.Configuration(namespace="default")
    result = asyncio.run(helm_sdkpy.chart.Lint(config).run(str(path)))
    return [m for m in result.get("Messages") or [] if m.get("Severity") == ERROR]


def main():
    passed = failed = 0
    errors = lint(CHART)
    if errors:
        print(f"FAIL helm lint {CHART}: {errors}")
        failed += 1
    else:
        print(f"ok   helm lint {CHART}")
        passed += 1
    with tempfile.TemporaryDirectory() as tmp:
        bad = pathlib.Path(tmp) / "keyward"
        shutil.copytree(CHART, bad)
        values = (bad / "values.yaml").read_text()
        values = values.replace("  replicas: 2", '  replicas: "two"').replace("failurePolicy: Fail", "failurePolicy: Sometimes")
        (bad / "values.yaml").write_text(values)
        errors = lint(bad)
        if any(e.get("Path") == "values.yaml" for e in errors):
            print("ok   values.schema.json rejects a bad values file")
            passed += 1
        else:
            print(f"FAIL values.schema.json accepted a bad values file: {errors}")
            failed += 1
    print(f"helm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

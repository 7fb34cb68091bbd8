"""The Keyward chart installed with the real Helm library (helm-sdkpy; no helm binary is available here), shared
by tests/helm/lint.py and tests/k8s/podsim.py.

helm-sdkpy has no `helm template`, so the chart is installed for real (Install, wait off, the memory release
driver) against tests/helm/fake_api.py, a discovery and storage stand-in for the API server; the objects Helm
created there are what the chart rendered, and `lookup` sees them at the next upgrade.

    helm_sdkpy = keyward_chart.setup(<helm-sdkpy dir>)   # first thing in a script: it may re-execute it
    r = keyward_chart.Release(values)          # install; r.objects, r.get(kind, name), r.secret(name, key)
    r.upgrade(values); r.stop()
"""
import asyncio
import base64
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "helm" / "keyward"

sys.path.insert(0, str(HERE))
from fake_api import FakeApi  # noqa: E402

helm_sdkpy = None


def setup(helm_sdkpy_dir):
    """Imports helm-sdkpy from `helm_sdkpy_dir` with the memory release driver. The driver is chosen when the
    Helm library loads, so it has to be in the environment from the start: without it, the script re-executes
    itself with it (call this before anything else happens)."""
    global helm_sdkpy
    if os.environ.get("HELM_DRIVER") != "memory":
        os.environ["HELM_DRIVER"] = "memory"
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.path.insert(0, str(helm_sdkpy_dir))
    import helm_sdkpy as module
    helm_sdkpy = module
    return module


class Release:
    """The chart installed (then possibly upgraded) against a fake API; `objects` as Helm created them."""

    def __init__(self, values=None, api=None, name="kw", namespace="keyward", chart=CHART):
        self.name, self.namespace, self.chart = name, namespace, chart
        self.api = api or FakeApi().start()
        self.config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=self.api.kubeconfig)
        try:
            self.result = asyncio.run(helm_sdkpy.Install(self.config).run(
                name, str(chart), values=values, wait=False, timeout=60))
        except BaseException:
            if api is None:
                self.api.stop()
            raise

    def upgrade(self, values=None):
        self.result = asyncio.run(helm_sdkpy.Upgrade(self.config).run(
            self.name, str(self.chart), values=values, wait=False, timeout=60, server_side_apply=False))

    @property
    def objects(self):
        """[(collection path, object)]"""
        return [(collection, obj) for (collection, _), obj in sorted(self.api.objects.items())]

    def get(self, kind, name):
        found = [o for _, o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found[0] if found else None

    def secret(self, name, key):
        data = (self.get("Secret", name) or {}).get("data") or {}
        return base64.b64decode(data[key]).decode() if key in data else None

    def stop(self):
        self.api.stop()


def selects(selector, labels):
    """A Kubernetes label selector against a label map (an empty selector selects everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:
            return False
    return True

"""Checks the Helm chart with the real Helm library (helm-sdkpy; no helm binary is available here).

1. `helm lint helm/keyward` reports no error.
2. values.schema.json refuses bad values files (a string replica count, an unknown failurePolicy, a value the
   chart no longer has, a proxy-configuration name that is no ConfigMap name, an audit file sidecars cannot
   write).
3. The rendered manifests. helm-sdkpy has no `helm template`, so the chart is installed for real
   (helm_sdkpy.Install, wait off, the memory release driver) against tests/helm/fake_api.py, a discovery and
   storage stand-in for the API server, and the objects Helm created there are checked:
   - everything is in the release namespace or cluster-scoped (nothing lands in an agent namespace);
   - RBAC grants exactly: tokenreviews create and namespaces get/list/watch cluster-wide; configmaps
     get/list/watch/create/update/patch and secrets get/list/watch in the release namespace;
   - the controller Deployment's args, Service, PDB, anti-affinity and security context;
   - each proxy-configuration ConfigMap is labelled, parses as YAML, has `secrets:` (Vault with the sidecar's
     own token) and, with a policy, `policy.dir: policies` and its Rego files; it validates against the JSON
     Schema the binary generates from its config types (`keyward schema`);
   - the injector settings name no Secret or ConfigMap, use only fields of src/webhook/settings.rs's Settings,
     and carry the same CA as the webhook's caBundle and the serving certificate's Secret;
   - the root CA Secret has tls.crt/tls.key, a CA certificate that may sign intermediates;
   - an upgrade keeps the root CA, the serving certificate and the API token (lookup); a chart-0.1 CA Secret
     (ca.crt/ca.key) is carried over to tls.crt/tls.key; the cert-manager variant reads the CA from a file;
   - the template refuses a default configuration that does not exist and a placeholder variable with two
     values.
   - the webhook's scope: matchConditions send only pods annotated keyward.dev/inject: "true"; the release
     namespace and the controller's own pods are excluded by the selectors (evaluated on sample labels);
   - platform settings on the controller (pull secrets, repository@digest also for sidecars, scheduling,
     pod metadata), proxy.vault.caFile as ca_file, and every route key rendered as given (compared with the
     values); values.schema.json's route part is generated from the Rust config types (scripts/chart-schema
     --check), and every rendered and example keyward.yaml validates against `keyward schema`;
   - the PodMonitor (sidecars' keyward-admin port, as src/webhook/containers.rs names it), the ServiceMonitor and
     the PrometheusRule (exactly deploy/observability/keyward-alerts.yaml's groups; the chart's copy is
     byte-identical), all off by default; the controller's NetworkPolicy;
   - GitOps: with every generated Secret supplied by name, two installs into fresh API servers render
     byte-identical manifests and no Secret.
4. deploy/kubernetes/sidecar-pod.yaml, the injected shape written by hand, follows the same rules (no Secret or
   ConfigMap, the tokens in the sidecar only, controller mode).
5. The release: the chart's default image repository is the one .github/workflows/release.yml pushes to, and
   deploy/Dockerfile builds from crates.io and Debian only into a non-root image holding the binary.
Usage: python3 tests/helm/lint.py <dir where helm-sdkpy is installed>
"""
import asyncio
import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import keyward_chart  # noqa: E402
from keyward_chart import selects  # noqa: E402

helm_sdkpy = keyward_chart.setup(sys.argv[1])  # may re-execute this script with HELM_DRIVER=memory
import jsonschema  # noqa: E402
import yaml  # noqa: E402
from cryptography import x509  # noqa: E402

from fake_api import FakeApi  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "keyward"
# The binary `cargo test` built (scripts/test runs this after it): its `keyward schema` is the config contract.
KEYWARD = os.environ.get("KEYWARD_BIN", str(ROOT / "target/debug/keyward"))
CONFIG_SCHEMA = None
ERROR = 3
RELEASE, NAMESPACE = "kw", "keyward"
FULLNAME = f"{RELEASE}-keyward"
CONTROLLER = f"{FULLNAME}-controller"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}
INJECT_CONDITION = ("has(object.metadata.annotations) && 'keyward.dev/inject' in object.metadata.annotations"
                    " && object.metadata.annotations['keyward.dev/inject'] == 'true'")
ALERTS = ROOT / "deploy" / "observability" / "keyward-alerts.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
DIGEST = "sha256:" + "ab" * 32

passed = failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what}{': ' + str(detail) if detail != '' else ''}")
    return ok


def lint(path):
    config = helm_sdkpy.actions.Configuration(namespace="default")
    result = asyncio.run(helm_sdkpy.chart.Lint(config).run(str(path)))
    return [m for m in result.get("Messages") or [] if m.get("Severity") == ERROR]


def bad_values(edit):
    """Lint errors of the chart with values.yaml changed by `edit` (text -> text)."""
    with tempfile.TemporaryDirectory() as tmp:
        bad = pathlib.Path(tmp) / "keyward"
        shutil.copytree(CHART, bad)
        values = edit((bad / "values.yaml").read_text())
        (bad / "values.yaml").write_text(values)
        return lint(bad)


class Release(keyward_chart.Release):
    """The chart installed as release kw in namespace keyward (see tests/helm/keyward_chart.py)."""

    def __init__(self, values=None, api=None):
        super().__init__(values, api=api, name=RELEASE, namespace=NAMESPACE, chart=CHART)


def rust_fields(path, struct):
    """The field names of `pub struct <struct>` in a Rust source file, and those that are required (no
    Option, no serde default)."""
    text = (ROOT / path).read_text()
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", text, re.S).group(1)
    fields, required, default = [], [], False
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("#[serde(default"):
            default = True
            continue
        m = re.match(r"pub (\w+): (.+),$", line)
        if m:
            fields.append(m.group(1))
            if not default and not m.group(2).startswith("Option<"):
                required.append(m.group(1))
            default = False
    return set(fields), set(required)


def check_config(config, what):
    """A keyward.yaml validates against the JSON Schema generated from the Rust config types (`keyward schema`):
    every key at every depth is one the binary reads, and every required one is there."""
    global CONFIG_SCHEMA
    if CONFIG_SCHEMA is None:
        out = subprocess.run([KEYWARD, "schema"], check=True, capture_output=True, text=True).stdout
        CONFIG_SCHEMA = jsonschema.Draft7Validator(json.loads(out))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in CONFIG_SCHEMA.iter_errors(config)]
    check(not errors, f"{what}: valid against `keyward schema`", errors)


def check_keys(value, path, struct, what):
    fields, required = rust_fields(path, struct)
    keys = set(value or {})
    check(keys <= fields and required <= keys, f"{what}: the fields of {struct}",
          f"unknown {sorted(keys - fields)}, missing {sorted(required - keys)}")




def without_env(routes):
    """Routes as keyward.yaml must get them: as given, less the chart's own credentials[].env."""
    return [{**r, **({"credentials": [{k: v for k, v in c.items() if k != "env"} for c in r["credentials"]]}
                     if "credentials" in r else {})} for r in routes]


def proxy_config(release, name):
    cm = release.get("ConfigMap", name)
    return cm, yaml.safe_load(cm["data"]["keyward.yaml"]) if cm else None


def check_default_install():
    r = Release()
    try:
        # Where everything goes.
        misplaced = [(c, o["kind"], o["metadata"]["name"]) for c, o in r.objects
                     if (f"/namespaces/{NAMESPACE}/" not in c and o["kind"] not in CLUSTER_SCOPED)
                     or o["metadata"].get("namespace", NAMESPACE) != NAMESPACE
                     or (o["kind"] in CLUSTER_SCOPED and "/namespaces/" in c)]
        check(not misplaced and len(r.objects) > 10,
              f"all {len(r.objects)} objects are in {NAMESPACE} or cluster-scoped ({', '.join(sorted(CLUSTER_SCOPED))})",
              misplaced)
        subjects = [s for _, o in r.objects for s in o.get("subjects", [])]
        check(subjects and all(s["namespace"] == NAMESPACE and s["name"] == FULLNAME for s in subjects),
              "RBAC binds the controller's service account only", subjects)

        # RBAC, exactly.
        def rules(kind):
            obj = r.get(kind, CONTROLLER) or {}
            return sorted((tuple(x["apiGroups"]), tuple(x["resources"]), tuple(sorted(x["verbs"])), tuple(x.get("resourceNames", [])))
                          for x in obj.get("rules", []))
        check(rules("ClusterRole") == sorted([
            (("authentication.k8s.io",), ("tokenreviews",), ("create",), ()),
            (("",), ("namespaces",), ("get", "list", "watch"), ()),
        ]), "ClusterRole: tokenreviews create, namespaces get/list/watch, nothing else", rules("ClusterRole"))
        check(rules("Role") == sorted([
            (("",), ("configmaps",), tuple(sorted(["get", "list", "watch", "create", "update", "patch"])), ()),
            (("",), ("secrets",), ("get", "list", "watch"), ()),
        ]), "Role: configmaps get/list/watch/create/update/patch, secrets get/list/watch, nothing else", rules("Role"))
        roles = [o["kind"] for _, o in r.objects if o["kind"] in ("Role", "ClusterRole")]
        check(sorted(roles) == ["ClusterRole", "Role"], "no other Role or ClusterRole", roles)

        # The controller.
        deployments = [o for _, o in r.objects if o["kind"] == "Deployment"]
        check([d["metadata"]["name"] for d in deployments] == [CONTROLLER], "one Deployment: the controller",
              [d["metadata"]["name"] for d in deployments])
        d = r.get("Deployment", CONTROLLER)
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        expected = [
            "--log-format=json", "controller", "--listen=0.0.0.0:8443",
            "--tls-cert=/etc/keyward/tls/tls.crt", "--tls-key=/etc/keyward/tls/tls.key",
            "--namespace=$(POD_NAMESPACE)", f"--ca-secret={FULLNAME}-ca", f"--blocked-configmap={FULLNAME}-blocked",
            "--audience=keyward", "--namespace-selector=keyward.dev/injection=enabled",
            "--intermediate-lifetime=24h", "--api-token-file=/etc/keyward/api/token",
            "--webhook-settings=/etc/keyward/injector/settings.yaml",
        ]
        check(container["args"] == expected, "controller args", container["args"])
        env = {e["name"]: e for e in container.get("env", [])}
        check(env.get("POD_NAMESPACE", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.namespace"}},
              "POD_NAMESPACE from the downward API", env)
        check(d["spec"]["replicas"] == 2 and "podAntiAffinity" in pod.get("affinity", {}),
              "2 replicas, anti-affinity")
        check(pod["securityContext"].get("runAsNonRoot") is True
              and container["securityContext"].get("readOnlyRootFilesystem") is True
              and container["securityContext"].get("allowPrivilegeEscalation") is False,
              "non-root, read-only root filesystem, no privilege escalation")
        check(pod.get("automountServiceAccountToken") is True, "the controller gets its API token (kube-rs)")
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        check(volumes[mounts["/etc/keyward/api"]].get("secret", {}).get("secretName") == f"{CONTROLLER}-api"
              and volumes[mounts["/etc/keyward/tls"]].get("secret", {}).get("secretName") == f"{CONTROLLER}-tls"
              and volumes[mounts["/etc/keyward/injector"]].get("configMap", {}).get("name") == f"{CONTROLLER}-injector",
              "the controller mounts the API token, its serving certificate and the injector settings", mounts)
        service = r.get("Service", CONTROLLER)
        check(service and service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https"}]
              and service["spec"]["selector"] == d["spec"]["selector"]["matchLabels"],
              "the Service: 443 to the controller's https port")
        pdb = r.get("PodDisruptionBudget", CONTROLLER)
        check(pdb and pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"],
              "a PodDisruptionBudget over the controller")
        token = r.secret(f"{CONTROLLER}-api", "token")
        check(token and len(token) >= 32, "a generated API token Secret")

        # The webhook points at the controller, trusting the CA the injector gives sidecars.
        hook = r.get("MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
        check(hook["clientConfig"]["service"] == {"name": CONTROLLER, "namespace": NAMESPACE, "path": "/mutate", "port": 443},
              "the webhook calls the controller's Service on /mutate", hook["clientConfig"]["service"])
        settings = yaml.safe_load(r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"])
        check_keys(settings, "src/webhook/settings.rs", "Settings", "injector settings")
        check(settings["controller_url"] == f"https://{CONTROLLER}.{NAMESPACE}.svc:443", "controller_url",
              settings["controller_url"])
        ca_bundle = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
        check(settings.get("controller_ca", "").strip() == ca_bundle.strip() == r.secret(f"{CONTROLLER}-tls", "ca.crt").strip()
              and "BEGIN CERTIFICATE" in ca_bundle,
              "controller_ca = the webhook's caBundle = ca.crt of the serving certificate's Secret")
        serving = x509.load_pem_x509_certificate(r.secret(f"{CONTROLLER}-tls", "tls.crt").encode())
        names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        check(f"{CONTROLLER}.{NAMESPACE}.svc" in names, "the serving certificate is valid for the Service", names)
        check((settings["default_config"], settings["controller_audience"], settings["vault_audience"],
               settings["token_expiration_seconds"]) == ("default", "keyward", "vault", 3600),
              "default config name, audiences and token lifetime")
        text = json.dumps(settings)
        check(not any(k in text for k in ("ca_secret", "admin_token_secret", "secretName", "configMap")),
              "the injector settings name no Secret or ConfigMap")
        check(settings.get("env") == {}, "env is an empty map without credentials (not null)", settings.get("env"))

        # The root CA.
        cert, key = r.secret(f"{FULLNAME}-ca", "tls.crt"), r.secret(f"{FULLNAME}-ca", "tls.key")
        ca = x509.load_pem_x509_certificate(cert.encode()) if cert else None
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value if ca else None
        check(constraints and constraints.ca and constraints.path_length is None and key and "PRIVATE KEY" in key,
              "the root CA Secret: tls.crt (CA, no path length limit: it signs intermediates) and tls.key")

        # The default proxy configuration.
        cm, config = proxy_config(r, "default")
        check(cm and cm["metadata"]["labels"].get("keyward.dev/proxy-config") == "true",
              "ConfigMap default labelled keyward.dev/proxy-config")
        if config:
            check_config(config, "default keyward.yaml")
            vault = (config.get("secrets") or {}).get("vault") or {}
            check(vault.get("auth", {}).get("kubernetes", {}).get("jwt_path") == "/var/run/secrets/keyward/vault/token",
                  "secrets.vault logs in with the sidecar's own token", config.get("secrets"))
            check(config["routes"] == [] and "admin_token" not in config,
                  "routes is a list; no admin_token (the sidecar generates its own)")
        notes = r.result["info"].get("notes", "")
        check("keyward.dev/config" in notes and CONTROLLER in notes, "NOTES.txt names the controller and keyward.dev/config")

        # The webhook's scope.
        check(hook.get("matchConditions") == [{"name": "keyward-inject-annotation", "expression": INJECT_CONDITION}],
              "the webhook's matchConditions send only pods annotated keyward.dev/inject: \"true\"",
              hook.get("matchConditions"))
        ns_selector, object_selector = hook["namespaceSelector"], hook["objectSelector"]
        enrolled = {"keyward.dev/injection": "enabled"}
        check(selects(ns_selector, {**enrolled, "kubernetes.io/metadata.name": "agents"})
              and not selects(ns_selector, {**enrolled, "kubernetes.io/metadata.name": NAMESPACE})
              and not selects(ns_selector, {"kubernetes.io/metadata.name": "other"}),
              "namespaceSelector: enrolled namespaces, never the release namespace (even labelled)", ns_selector)
        controller_labels = d["spec"]["template"]["metadata"]["labels"]
        check(selects(object_selector, {"app": "sales-bot"}) and not selects(object_selector, controller_labels)
              and selects(d["spec"]["selector"], controller_labels),
              "objectSelector: agent pods, never the controller's own pods", object_selector)

        # Observability objects are off by default; the NetworkPolicy is on.
        kinds = {o["kind"] for _, o in r.objects}
        check(not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule"},
              "no PodMonitor, ServiceMonitor or PrometheusRule by default", kinds)
        check_network_policy(r, cidrs=[])
        return r
    except Exception:
        r.stop()
        raise


def check_upgrade(r):
    before = {k: r.secret(*k) for k in [(f"{FULLNAME}-ca", "tls.crt"), (f"{FULLNAME}-ca", "tls.key"),
                                       (f"{CONTROLLER}-tls", "ca.crt"), (f"{CONTROLLER}-tls", "tls.crt"),
                                       (f"{CONTROLLER}-api", "token")]}
    settings = r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"]
    r.upgrade({"controller": {"replicas": 3}})
    after = {k: r.secret(*k) for k in before}
    changed = [k for k in before if before[k] != after[k]]
    check(not changed and r.get("Deployment", CONTROLLER)["spec"]["replicas"] == 3,
          "an upgrade keeps the root CA, the serving certificate and CA, and the API token", changed)
    check(r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"] == settings,
          "and the CA running sidecars trust the controller by")
    r.stop()


# A route using every field of RawRoute and of the structs under it.
EVERY_ROUTE_KEY = {
    "name": "github", "hosts": ["api.github.com"], "paths": ["/repos/**"], "methods": ["GET", "POST"],
    "allow_private": False, "allow_plain_http": False, "policy": "data.keyward.github",
    "rate_limit": {"per_minute": 600, "burst": 60, "per_user": True, "max_keys": 5000},
    "concurrency": {"max_in_flight": 8, "queue_timeout": "2s"},
    "timeouts": {"connect": "3s", "tls": "3s", "response_headers": "30s", "idle": "1m"},
    "retry": {"attempts": 3, "base_delay": "100ms", "max_delay": "2s", "deadline": "10s", "max_body": 1048576,
              "max_retry_after": "5s"},
    "credentials": [
        {"name": "github_token", "placeholder": "kw-placeholder-github", "header": "Authorization",
         "format": "Bearer {secret}", "inject": "always",
         "vault": {"mount": "kv", "path": "agents/z", "key": "github", "version": 3, "kv": 2}},
        {"name": "app", "placeholder": "kw-placeholder-app", "query": "token", "oauth2": {
            "token_url": "https://auth.example.com/token", "grant": "refresh_token",
            "client_id": {"vault": {"path": "agents/z", "key": "client_id"}},
            "client_secret": {"secret": "client_secret"},
            "refresh_token": {"path": "agents/z", "key": "refresh"}, "scopes": ["read"], "client_auth": "body",
            "refresh_before": "2m", "allow_private": False}},
    ],
}


def check_configs_and_policy():
    values = {"proxy": {
        "policy": {"enabled": True, "rego": {"main.rego": "package keyward\ndefault decision := {\"allow\": true}\n"}},
        "routes": [{"name": "openai", "hosts": ["api.openai.com"], "credentials": [
            {"placeholder": "kw-placeholder-openai", "vault": {"path": "agents/x", "key": "openai"},
             "header": "Authorization", "format": "Bearer {secret}", "env": "OPENAI_API_KEY"}]}],
        "configs": {"research": {
            "policy": {"mode": "shadow", "rego": {"research.rego": "package keyward\n"}},
            "vault": {"role": "research", "caFile": "/etc/ssl/vault-ca.pem"},
            "routes": [{"name": "anthropic", "hosts": ["api.anthropic.com"], "credentials": [
                {"placeholder": "kw-placeholder-anthropic", "vault": {"path": "agents/y", "key": "anthropic"},
                 "header": "x-api-key", "env": "ANTHROPIC_API_KEY"}]}],
        }, "complete": {"routes": [EVERY_ROUTE_KEY]}},
    }}
    r = Release(values)
    try:
        for name in ("default", "research"):
            cm, config = proxy_config(r, name)
            check(cm is not None and config is not None and "secrets" in config
                  and config.get("policy", {}).get("dir") == "policies",
                  f"ConfigMap {name}: keyward.yaml parses, has secrets: and policy.dir: policies",
                  config)
            check_config(config, f"{name} keyward.yaml")
        default, research = proxy_config(r, "default"), proxy_config(r, "research")
        check(sorted(default[0]["data"]) == ["keyward.yaml", "main.rego"]
              and sorted(research[0]["data"]) == ["keyward.yaml", "research.rego"],
              "each ConfigMap holds keyward.yaml and its own Rego files",
              (sorted(default[0]["data"]), sorted(research[0]["data"])))
        d, s = default[1], research[1]
        check(s["secrets"]["vault"]["auth"]["kubernetes"]["role"] == "research"
              and s["secrets"]["vault"]["address"] == d["secrets"]["vault"]["address"]
              and s["policy"]["mode"] == "shadow" and d["policy"]["mode"] == "enforce"
              and [x["name"] for x in s["routes"]] == ["anthropic"] and [x["name"] for x in d["routes"]] == ["openai"],
              "an entry overrides what it sets (role, mode, routes) and inherits the rest (address)")
        check("env" not in d["routes"][0]["credentials"][0], "credentials lose the chart-only env key")
        # Every route key is rendered, as given: no key dropped, none added.
        complete = proxy_config(r, "complete")[1]
        for name, config in (("default", d), ("research", s), ("complete", complete)):
            expected = without_env((values["proxy"]["configs"].get(name) or {}).get("routes") or values["proxy"]["routes"])
            check(config["routes"] == expected, f"{name}: the rendered routes are the values' routes (less env)",
                  [(a, b) for a, b in zip(config["routes"], expected) if a != b] or config["routes"])
        full = complete["routes"][0]
        check(full.get("rate_limit") == EVERY_ROUTE_KEY["rate_limit"], "a route's rate_limit is rendered",
              full.get("rate_limit"))
        check_config(complete, "complete keyward.yaml (a route with every key)")
        vault = s["secrets"]["vault"]
        check(vault.get("ca_file") == "/etc/ssl/vault-ca.pem" and "ca_file" not in d["secrets"]["vault"],
              "proxy.vault.caFile is secrets.vault.ca_file (and absent when empty)", vault)
        settings = yaml.safe_load(r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"])
        check(settings["env"] == {"OPENAI_API_KEY": "kw-placeholder-openai", "ANTHROPIC_API_KEY": "kw-placeholder-anthropic"},
              "agent containers get the placeholder variables of every configuration", settings["env"])
    finally:
        r.stop()


def check_migration_and_cert_manager():
    api = FakeApi().start()
    # As chart 0.1 left it (kept on uninstall, owned by the release of the same name).
    old = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": f"{FULLNAME}-ca", "namespace": NAMESPACE,
                        "labels": {"app.kubernetes.io/managed-by": "Helm"},
                        "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE,
                                        "helm.sh/resource-policy": "keep"}},
           "data": {"ca.crt": base64.b64encode(b"OLD CERT").decode(), "ca.key": base64.b64encode(b"OLD KEY").decode()}}
    api.objects[(f"/api/v1/namespaces/{NAMESPACE}/secrets", f"{FULLNAME}-ca")] = old
    try:
        r = Release({"webhook": {"certManager": {"enabled": True}}}, api=api)
    except helm_sdkpy.HelmError as e:
        check(False, "install over a chart-0.1 CA Secret", e)
        api.stop()
        return
    try:
        check(r.secret(f"{FULLNAME}-ca", "tls.crt") == "OLD CERT" and r.secret(f"{FULLNAME}-ca", "tls.key") == "OLD KEY",
              "a chart-0.1 CA Secret (ca.crt, ca.key) is carried over to tls.crt, tls.key")
        settings = yaml.safe_load(r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"])
        check(settings.get("controller_ca_file") == "/etc/keyward/tls/ca.crt" and "controller_ca" not in settings,
              "cert-manager: the injector reads the CA from the serving certificate's Secret", settings)
        hook = r.get("MutatingWebhookConfiguration", FULLNAME)
        certificate = r.get("Certificate", CONTROLLER)
        ca_certificate = r.get("Certificate", f"{CONTROLLER}-ca")
        check(hook["metadata"]["annotations"].get("cert-manager.io/inject-ca-from") == f"{NAMESPACE}/{CONTROLLER}"
              and certificate["spec"]["secretName"] == f"{CONTROLLER}-tls"
              and certificate["spec"]["issuerRef"]["name"] == f"{CONTROLLER}-ca"
              and ca_certificate["spec"]["isCA"] is True,
              "cert-manager: a CA of the chart's own issues the serving certificate; the webhook gets it injected")
        check(r.get("Secret", f"{CONTROLLER}-tls") is None, "cert-manager: no generated serving Secret")
    finally:
        r.stop()


def check_refusals():
    for values, message, what in [
        ({"proxy": {"defaultConfig": "missing"}}, "names no entry of proxy.configs",
         "a default configuration that does not exist"),
        ({"proxy": {"configs": {"research": {"routes": [{"name": "a", "hosts": ["a.test"], "credentials": [
            {"placeholder": "kw-placeholder-other", "env": "OPENAI_API_KEY"}]}]}},
          "routes": [{"name": "b", "hosts": ["b.test"], "credentials": [
              {"placeholder": "kw-placeholder-openai", "env": "OPENAI_API_KEY"}]}]}},
         "agent containers get one value", "one placeholder variable with two values"),
    ]:
        try:
            r = Release(values)
            r.stop()
            check(False, f"the chart refuses {what}", "it installed")
        except helm_sdkpy.HelmError as e:
            check(message in str(e), f"the chart refuses {what}", e)


def check_hand_written_pod():
    """deploy/kubernetes/sidecar-pod.yaml is the injected shape written by hand: the same rules hold."""
    pod = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "sidecar-pod.yaml").read_text())
    spec = pod["spec"]
    kinds = [sorted(set(v) - {"name"}) for v in spec["volumes"]]
    sources = [list(s) for v in spec["volumes"] for s in v.get("projected", {}).get("sources", [])]
    check(all(k in (["emptyDir"], ["projected"]) for k in kinds) and all(s == ["serviceAccountToken"] for s in sources),
          "sidecar-pod.yaml: emptyDirs and projected tokens only, no Secret or ConfigMap", kinds)
    containers = spec["initContainers"] + spec["containers"]
    tokens = {v["name"]: v["projected"]["sources"][0]["serviceAccountToken"]["audience"]
              for v in spec["volumes"] if "projected" in v}
    mounting = {name: [c["name"] for c in containers if any(m["name"] == name for m in c.get("volumeMounts", []))]
                for name in tokens}
    check(sorted(tokens.values()) == ["keyward", "vault"] and all(m == ["keyward"] for m in mounting.values()),
          "sidecar-pod.yaml: the keyward and vault tokens are mounted in the sidecar only", mounting)
    args = spec["initContainers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2]))
    check(args[0] == "run" and flags.get("--config") == "/var/run/keyward/config/keyward.yaml"
          and flags.get("--controller-token") == "/var/run/secrets/keyward/controller/token"
          and flags.get("--admin-token-file") == "/var/run/keyward/admin.token"
          and {"--controller", "--controller-config", "--trust-bundle"} <= set(flags),
          "sidecar-pod.yaml: the sidecar runs in controller mode", args)


def check_schema_matches_rust():
    """values.schema.json's route part is what scripts/chart-schema generates from `keyward schema` (the Rust
    config types), so the chart can neither refuse nor silently drop a route key the binary accepts; and every
    example configuration validates against that schema."""
    stale = subprocess.run([sys.executable, str(ROOT / "scripts/chart-schema"), "--check", "--keyward", KEYWARD],
                           capture_output=True, text=True)
    check(stale.returncode == 0, "values.schema.json's routes are generated from the Rust config types",
          stale.stderr.strip())
    schema = json.loads((CHART / "values.schema.json").read_text())
    check(schema["properties"]["proxy"]["properties"]["routes"] == {"$ref": "#/definitions/routes"}
          and schema["definitions"]["proxyConfig"]["properties"]["routes"] == {"$ref": "#/definitions/routes"},
          "proxy.routes and proxy.configs.*.routes share that schema")
    examples = sorted((ROOT / "examples").glob("keyward*.yaml"))
    check(len(examples) >= 3, "the example configurations are found", examples)
    for path in examples:
        check_config(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))

def check_platform_settings():
    values = {
        "image": {"digest": DIGEST, "tag": "ignored"},
        "imagePullSecrets": [{"name": "regcred"}],
        "controller": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
            "priorityClassName": "system-cluster-critical",
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "ScheduleAnyway"}],
            "podAnnotations": {"example.com/team": "platform"},
            "podLabels": {"team": "platform", "app.kubernetes.io/name": "not-keyward",
                          "keyward.dev/component": "agent"},
        },
        "webhook": {"objectSelector": {"matchLabels": {"keyward": "yes"},
                                       "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                    "namespaceSelector": {"matchLabels": {"keyward.dev/injection": "enabled"},
                                          "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}},
        "networkPolicy": {"apiServer": {"cidrs": ["10.0.0.10/32", "fd00::1/128"], "ports": [6443]},
                          "extraIngress": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    }
    r = Release(values)
    try:
        d = r.get("Deployment", CONTROLLER)
        template = d["spec"]["template"]
        pod = template["spec"]
        image = f"ghcr.io/keyward/keyward@{DIGEST}"
        settings = yaml.safe_load(r.get("ConfigMap", f"{CONTROLLER}-injector")["data"]["settings.yaml"])
        check(pod["containers"][0]["image"] == image and settings["image"] == image,
              "image.digest: the controller and the sidecars run repository@digest", (pod["containers"][0]["image"], settings["image"]))
        check(pod.get("imagePullSecrets") == [{"name": "regcred"}], "imagePullSecrets on the controller's pod")
        check(pod.get("nodeSelector") == values["controller"]["nodeSelector"]
              and pod.get("tolerations") == values["controller"]["tolerations"]
              and pod.get("priorityClassName") == "system-cluster-critical",
              "nodeSelector, tolerations and priorityClassName on the controller's pod")
        affinity = pod.get("affinity", {})
        check(affinity.get("nodeAffinity") == values["controller"]["affinity"]["nodeAffinity"]
              and "podAntiAffinity" in affinity, "affinity: the given nodeAffinity beside the default anti-affinity",
              affinity)
        spread = pod.get("topologySpreadConstraints") or [{}]
        check(spread[0].get("topologyKey") == "topology.kubernetes.io/zone"
              and spread[0].get("labelSelector") == {"matchLabels": d["spec"]["selector"]["matchLabels"]},
              "topologySpreadConstraints, with the controller's labels as the default labelSelector", spread)
        annotations, labels = template["metadata"]["annotations"], template["metadata"]["labels"]
        check(annotations.get("example.com/team") == "platform" and "checksum/injector" in annotations,
              "podAnnotations beside the injector checksum", annotations)
        check(labels.get("team") == "platform" and labels["app.kubernetes.io/name"] == "keyward"
              and labels["keyward.dev/component"] == "controller" and selects(d["spec"]["selector"], labels),
              "podLabels added; the selector's labels and keyward.dev/component cannot be replaced", labels)
        hook = r.get("MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
        obj, ns = hook["objectSelector"], hook["namespaceSelector"]
        check(selects(obj, {"keyward": "yes"}) and not selects(obj, {"keyward": "yes", "tier": "db"})
              and not selects(obj, {"keyward": "yes", "keyward.dev/component": "controller"}),
              "the given objectSelector is kept, and the controller's pods still excluded", obj)
        labelled = {"keyward.dev/injection": "enabled", "env": "prod"}
        check(selects(ns, {**labelled, "kubernetes.io/metadata.name": "agents"})
              and not selects(ns, {"keyward.dev/injection": "enabled", "kubernetes.io/metadata.name": "agents"})
              and not selects(ns, {**labelled, "kubernetes.io/metadata.name": NAMESPACE}),
              "the given namespaceSelector expressions are kept, and the release namespace still excluded", ns)
        check_network_policy(r, cidrs=["10.0.0.10/32", "fd00::1/128"], ports=[6443], extra=1)
    finally:
        r.stop()
    r = Release({"networkPolicy": {"enabled": False}})
    try:
        check(not any(o["kind"] == "NetworkPolicy" for _, o in r.objects), "networkPolicy.enabled false: none")
    finally:
        r.stop()


def check_network_policy(r, cidrs, ports=(443, 6443), extra=0):
    policies = [o for _, o in r.objects if o["kind"] == "NetworkPolicy"]
    d = r.get("Deployment", CONTROLLER)
    if not check(len(policies) == 1, "one NetworkPolicy (networkPolicy.enabled, the default)", len(policies)):
        return
    spec = policies[0]["spec"]
    check(spec["podSelector"] == d["spec"]["selector"] and spec["policyTypes"] == ["Ingress", "Egress"],
          "NetworkPolicy: the controller's pods, ingress and egress")
    port = d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    ingress = spec["ingress"]
    check(all(rule["ports"] == [{"protocol": "TCP", "port": port}] for rule in ingress),
          f"NetworkPolicy ingress: the controller's port {port} only", ingress)
    peers = [p for rule in ingress for p in rule.get("from", [])]
    blocks = sorted(p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p)
    check({"namespaceSelector": {"matchLabels": {"keyward.dev/injection": "enabled"}}} in peers
          and blocks == sorted(cidrs) and len(ingress) == 2 + extra
          and (bool(cidrs) == all("from" in rule for rule in ingress)),
          "NetworkPolicy ingress: enrolled namespaces, the API server's CIDRs (any source without them)"
          + (", the extra peers" if extra else ""), ingress)
    egress = spec["egress"]
    dns = [rule for rule in egress if {"protocol": "UDP", "port": 53} in rule["ports"]]
    api = [rule for rule in egress if rule not in dns]
    check(len(dns) == 1 and {"protocol": "TCP", "port": 53} in dns[0]["ports"] and len(api) == 1
          and sorted(p["port"] for p in api[0]["ports"]) == sorted(ports)
          and sorted(p["ipBlock"]["cidr"] for p in api[0].get("to", [])) == sorted(cidrs),
          "NetworkPolicy egress: DNS, and the Kubernetes API (its CIDRs and ports)", egress)


def check_observability():
    r = Release({"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}},
                                "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}})
    try:
        monitors = [o for _, o in r.objects if o["kind"] == "PodMonitor"]
        mutate = (ROOT / "src" / "webhook" / "containers.rs").read_text()
        port_name = re.search(r'"name": "([^"]+)", "containerPort": settings.admin_port', mutate).group(1)
        config = proxy_config(r, "default")[1]
        if check(len(monitors) == 1, "monitoring.podMonitor.enabled: a PodMonitor"):
            m = monitors[0]
            endpoints = m["spec"]["podMetricsEndpoints"]
            check(m["metadata"]["labels"].get("release") == "kps" and m["spec"]["namespaceSelector"] == {"any": True}
                  and len(endpoints) == 1 and endpoints[0]["port"] == port_name == "keyward-admin"
                  and endpoints[0]["path"] == "/metrics" and endpoints[0]["scheme"] == "http"
                  and not set(endpoints[0]) & {"authorization", "bearerTokenSecret", "basicAuth"},
                  "PodMonitor: the sidecars' admin port (as src/webhook/containers.rs names it), /metrics, no token", m["spec"])
            check(config["admin"].startswith("0.0.0.0:"), "and the sidecars' admin listener is reachable on the pod IP",
                  config["admin"])
        service = r.get("Service", CONTROLLER)
        monitors = [o for _, o in r.objects if o["kind"] == "ServiceMonitor"]
        if check(len(monitors) == 1, "monitoring.serviceMonitor.enabled: a ServiceMonitor"):
            m = monitors[0]["spec"]
            endpoint = m["endpoints"][0]
            d = r.get("Deployment", CONTROLLER)
            tls_volume = [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"][0]
            check(selects(m["selector"], service["metadata"]["labels"])
                  and endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
                  and endpoint["scheme"] == "https" and endpoint["path"] == "/metrics"
                  and endpoint["tlsConfig"]["ca"]["secret"] == {"name": tls_volume["secret"]["secretName"], "key": "ca.crt"}
                  and endpoint["tlsConfig"]["serverName"] == f"{CONTROLLER}.{NAMESPACE}.svc",
                  "ServiceMonitor: the controller's Service, /metrics over HTTPS trusting its serving CA", m)
        rules = [o for _, o in r.objects if o["kind"] == "PrometheusRule"]
        if check(len(rules) == 1, "monitoring.prometheusRule.enabled: a PrometheusRule"):
            expected = yaml.safe_load(ALERTS.read_text())["groups"]
            check(rules[0]["spec"] == {"groups": expected},
                  "PrometheusRule: exactly the groups of deploy/observability/keyward-alerts.yaml",
                  [g["name"] for g in rules[0]["spec"].get("groups", [])])
    finally:
        r.stop()
    copy = CHART / "files" / "keyward-alerts.yaml"
    check(copy.is_file() and not copy.is_symlink() and copy.read_bytes() == ALERTS.read_bytes(),
          "helm/keyward/files/keyward-alerts.yaml is a byte-identical copy of deploy/observability/keyward-alerts.yaml"
          " (cp deploy/observability/keyward-alerts.yaml helm/keyward/files/)")


def check_gitops():
    """Every generated Secret supplied by name: nothing random at render, so two renders are byte-identical."""
    from cryptography import x509 as _x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = _x509.Name([_x509.NameAttribute(_x509.oid.NameOID.COMMON_NAME, "gitops-ca")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    ca_pem = (_x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(_x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    values = {"ca": {"existingSecret": "root-ca"},
              "webhook": {"tls": {"existingSecret": "controller-tls", "caCert": ca_pem}},
              "controller": {"apiToken": {"existingSecret": "controller-api"}}}
    renders = []
    for _ in range(2):
        r = Release(values)
        try:
            renders.append((r.result["manifest"], r.result["info"].get("notes", ""), r.objects))
        finally:
            r.stop()
    (first, notes, objects), (second, notes2, _) = renders
    check(first == second and notes == notes2,
          "GitOps: with ca, webhook.tls and controller.apiToken supplied, two renders are byte-identical")
    secrets = [o["metadata"]["name"] for _, o in objects if o["kind"] == "Secret"]
    check(not secrets, "GitOps: no Secret is rendered", secrets)
    found = {o["kind"]: o for _, o in objects if o["kind"] in ("Deployment", "MutatingWebhookConfiguration")}
    pod = found["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    args = pod["containers"][0]["args"]
    check(volumes.get("tls") == "controller-tls" and volumes.get("api-token") == "controller-api"
          and "--ca-secret=root-ca" in args, "GitOps: the controller uses the supplied Secrets", (volumes, args))
    hook = found["MutatingWebhookConfiguration"]["webhooks"][0]
    settings = yaml.safe_load([o for _, o in objects if o["metadata"]["name"] == f"{CONTROLLER}-injector"][0]["data"]["settings.yaml"])
    check(base64.b64decode(hook["clientConfig"]["caBundle"]).decode().strip() == ca_pem.strip()
          == settings["controller_ca"].strip(), "GitOps: webhook.tls.caCert is the caBundle and what sidecars trust")
    # Without the supplied Secrets, two renders differ (the comparison above would see generated values).
    a, b = Release(), Release()
    try:
        check(a.result["manifest"] != b.result["manifest"], "without them, two renders differ (generated CA and token)")
    finally:
        a.stop()
        b.stop()
    # webhook.tls.existingSecret without caCert: read from the Secret at install (lookup), else refused.
    api = FakeApi().start()
    api.objects[(f"/api/v1/namespaces/{NAMESPACE}/secrets", "controller-tls")] = {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "controller-tls", "namespace": NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in
                 {"ca.crt": ca_pem, "tls.crt": "CERT", "tls.key": "KEY"}.items()}}
    try:
        r = Release({"webhook": {"tls": {"existingSecret": "controller-tls"}}}, api=api)
        hook = r.get("MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
        check(base64.b64decode(hook["clientConfig"]["caBundle"]).decode().strip() == ca_pem.strip()
              and r.secret("controller-tls", "tls.crt") == "CERT",
              "webhook.tls.existingSecret without caCert: the CA is read from its ca.crt, the Secret left alone")
    except helm_sdkpy.HelmError as e:
        check(False, "webhook.tls.existingSecret without caCert, the Secret present", e)
    finally:
        api.stop()
    for values, message, what in [
        ({"webhook": {"tls": {"existingSecret": "controller-tls"}}}, "set webhook.tls.caCert",
         "webhook.tls.existingSecret without caCert when it cannot read the Secret (helm template)"),
        ({"webhook": {"tls": {"existingSecret": "controller-tls", "caCert": ca_pem}, "certManager": {"enabled": True}}},
         "choose one source", "webhook.tls.existingSecret with cert-manager"),
    ]:
        try:
            Release(values).stop()
            check(False, f"the chart refuses {what}", "it installed")
        except helm_sdkpy.HelmError as e:
            check(message in str(e), f"the chart refuses {what}", e)


def check_release_files():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    workflow = yaml.safe_load(WORKFLOW.read_text()) if WORKFLOW.is_file() else {}
    check(workflow.get("env", {}).get("IMAGE") == values["image"]["repository"],
          "the chart's default image repository is the one .github/workflows/release.yml pushes",
          (workflow.get("env", {}).get("IMAGE"), values["image"]["repository"]))
    text = json.dumps(workflow)
    check("push-by-digest=true" in text and "imagetools create" in text and "deploy/Dockerfile" in text,
          "release.yml builds deploy/Dockerfile, pushes by digest and joins the digests into one index")
    check((CHART / "values.yaml").read_text().count('\n  digest: ""') == 1
          and 's/^  digest: \\"\\"/' in WORKFLOW.read_text(),
          "release.yml pins the packaged chart's image.digest (the one line its sed replaces)")
    lines = [l.strip() for l in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
             if l.strip() and not l.strip().startswith("#")]
    froms = [l.split()[1] for l in lines if l.startswith("FROM ")]
    final = lines[max(i for i, l in enumerate(lines) if l.startswith("FROM ")):]
    copies = [l for l in final if l.startswith("COPY")]
    check(len(froms) == 3 and re.fullmatch(r"rust:[0-9.]+-bookworm", froms[0].replace("${RUST_VERSION}", "1"))
          and re.match(r"(gcr\.io/distroless/[a-z]+-debian12|debian:bookworm)", froms[-1])
          and "USER 65532:65532" in final and len(copies) == 1 and copies[0].startswith("COPY --from=build "),
          "deploy/Dockerfile: a rust:*-bookworm builder, a Debian-based runtime as uid 65532 with the binary only",
          (froms, copies))
    capture = lines[lines.index(next(l for l in lines if l.endswith(" AS capture"))):]
    capture = capture[:next(i for i, l in enumerate(capture[1:], 1) if l.startswith("FROM "))]
    check(capture[0] == "FROM debian:bookworm-slim AS capture" and any("install" in l and "iptables" in l for l in capture)
          and any(l.startswith("COPY --from=build ") for l in capture)
          and "target: capture" in WORKFLOW.read_text() and "${{ env.IMAGE }}-capture" in WORKFLOW.read_text(),
          "deploy/Dockerfile's capture stage (keyward + Debian's iptables) is what release.yml pushes as <image>-capture",
          capture)
    sources = set(re.findall(r'^source = "([^"]+)"', (ROOT / "Cargo.lock").read_text(), re.M))
    check(sources == {"registry+https://github.com/rust-lang/crates.io-index"},
          "Cargo.lock: every dependency comes from crates.io", sources)


def main():
    errors = lint(CHART)
    check(not errors, f"helm lint {CHART}", errors)
    for edit, what in [
        (lambda v: v.replace("  replicas: 2", '  replicas: "two"').replace("failurePolicy: Fail", "failurePolicy: Sometimes"),
         "a string replica count, an unknown failurePolicy"),
        (lambda v: v.replace("webhook:\n", "webhook:\n  replicas: 2\n", 1), "webhook.replicas (now controller.replicas)"),
        (lambda v: v.replace("    default: {}", "    Default_Config: {}"), "a configuration name that is no ConfigMap name"),
        (lambda v: v.replace("audit: stdout", "audit: /var/log/audit.jsonl"), "an audit file"),
        (lambda v: v.replace("tokenExpirationSeconds: 3600", "tokenExpirationSeconds: 60"), "a token lifetime under 600 s"),
        (lambda v: v.replace("      keyward.dev/injection: enabled", ""), "no namespace label to enroll by"),
    ]:
        errors = bad_values(edit)
        check(any(e.get("Path") == "values.yaml" for e in errors), f"values.schema.json refuses {what}", errors)
    for edit, what in [
        (lambda v: v.replace('  digest: ""', '  digest: "latest"'), "an image digest that is no sha256 digest"),
        (lambda v: v.replace("  nodeSelector: {}", "  nodeSelectors: {}"), "controller.nodeSelectors (a typo)"),
        (lambda v: v.replace("  routes: []", "  routes: [{name: a, hosts: [a.test], rate_limits: {per_minute: 1}}]"),
         "an unknown route key (rate_limits)"),
        (lambda v: v.replace("  routes: []", "  routes: [{name: a, hosts: [a.test], rate_limit: {per_minit: 1}}]"),
         "an unknown rate_limit key"),
        (lambda v: v.replace("networkPolicy:\n  enabled: true\n", "networkPolicy:\n  enabled: true\n  ingress: []\n"),
         "networkPolicy.ingress (unknown)"),
        (lambda v: v.replace("    cidrs: []", "    cidrs: [10.0.0.1]"), "an API server CIDR without a prefix length"),
    ]:
        errors = bad_values(edit)
        check(any(e.get("Path") == "values.yaml" for e in errors), f"values.schema.json refuses {what}", errors)
    check_schema_matches_rust()
    check_upgrade(check_default_install())
    check_configs_and_policy()
    check_platform_settings()
    check_observability()
    check_gitops()
    check_migration_and_cert_manager()
    check_refusals()
    check_hand_written_pod()
    check_release_files()
    print(f"helm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

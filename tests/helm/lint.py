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
     own token) and, with a policy, `policy.dir: policies` and its Rego files; its keys are fields of
     src/config/raw.rs's RawConfig (read from the source);
   - the injector settings name no Secret or ConfigMap, use only fields of src/webhook/mutate.rs's Settings,
     and carry the same CA as the webhook's caBundle and the serving certificate's Secret;
   - the root CA Secret has tls.crt/tls.key, a CA certificate that may sign intermediates;
   - an upgrade keeps the root CA, the serving certificate and the API token (lookup); a chart-0.1 CA Secret
     (ca.crt/ca.key) is carried over to tls.crt/tls.key; the cert-manager variant reads the CA from a file;
   - the template refuses a default configuration that does not exist and a placeholder variable with two
     values.
4. deploy/kubernetes/sidecar-pod.yaml, the injected shape written by hand, follows the same rules (no Secret or
   ConfigMap, the tokens in the sidecar only, controller mode).
Usage: python3 tests/helm/lint.py <dir where helm-sdkpy is installed>
"""
import asyncio
import base64
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile

# The release driver is chosen when the Helm library loads: it has to be in the environment from the start.
if os.environ.get("HELM_DRIVER") != "memory":
    os.environ["HELM_DRIVER"] = "memory"
    os.execv(sys.executable, [sys.executable, *sys.argv])

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helm_sdkpy  # noqa: E402
import yaml  # noqa: E402
from cryptography import x509  # noqa: E402

from fake_api import FakeApi  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "keyward"
ERROR = 3
RELEASE, NAMESPACE = "kw", "keyward"
FULLNAME = f"{RELEASE}-keyward"
CONTROLLER = f"{FULLNAME}-controller"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}

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


class Release:
    """The chart installed (then possibly upgraded) against a fake API; `objects` as Helm created them."""

    def __init__(self, values=None, api=None):
        self.api = api or FakeApi().start()
        self.config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=self.api.kubeconfig)
        self.result = asyncio.run(helm_sdkpy.Install(self.config).run(
            RELEASE, str(CHART), values=values, wait=False, timeout=60))

    def upgrade(self, values=None):
        self.result = asyncio.run(helm_sdkpy.Upgrade(self.config).run(
            RELEASE, str(CHART), values=values, wait=False, timeout=60, server_side_apply=False))

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


def check_keys(value, path, struct, what):
    fields, required = rust_fields(path, struct)
    keys = set(value or {})
    check(keys <= fields and required <= keys, f"{what}: the fields of {struct}",
          f"unknown {sorted(keys - fields)}, missing {sorted(required - keys)}")


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
        check_keys(settings, "src/webhook/mutate.rs", "Settings", "injector settings")
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
            check_keys(config, "src/config/raw.rs", "RawConfig", "default keyward.yaml")
            vault = (config.get("secrets") or {}).get("vault") or {}
            check(vault.get("auth", {}).get("kubernetes", {}).get("jwt_path") == "/var/run/secrets/keyward/vault/token",
                  "secrets.vault logs in with the sidecar's own token", config.get("secrets"))
            check_keys(config["secrets"], "src/config/raw.rs", "RawSecrets", "secrets")
            check_keys(vault, "src/config/raw.rs", "RawVault", "secrets.vault")
            check_keys(vault["auth"]["kubernetes"], "src/config/raw.rs", "RawKubernetesAuth", "auth.kubernetes")
            check(config["routes"] == [] and "admin_token" not in config,
                  "routes is a list; no admin_token (the sidecar generates its own)")
        notes = r.result["info"].get("notes", "")
        check("keyward.dev/config" in notes and CONTROLLER in notes, "NOTES.txt names the controller and keyward.dev/config")
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


def check_configs_and_policy():
    values = {"proxy": {
        "policy": {"enabled": True, "rego": {"main.rego": "package keyward\ndefault decision := {\"allow\": true}\n"}},
        "routes": [{"name": "openai", "hosts": ["api.openai.com"], "credentials": [
            {"placeholder": "kw-placeholder-openai", "vault": {"path": "agents/x", "key": "openai"},
             "header": "Authorization", "format": "Bearer {secret}", "env": "OPENAI_API_KEY"}]}],
        "configs": {"research": {
            "policy": {"mode": "shadow", "rego": {"research.rego": "package keyward\n"}},
            "vault": {"role": "research"},
            "routes": [{"name": "anthropic", "hosts": ["api.anthropic.com"], "credentials": [
                {"placeholder": "kw-placeholder-anthropic", "vault": {"path": "agents/y", "key": "anthropic"},
                 "header": "x-api-key", "env": "ANTHROPIC_API_KEY"}]}],
        }},
    }}
    r = Release(values)
    try:
        for name in ("default", "research"):
            cm, config = proxy_config(r, name)
            check(cm is not None and config is not None and "secrets" in config
                  and config.get("policy", {}).get("dir") == "policies",
                  f"ConfigMap {name}: keyward.yaml parses, has secrets: and policy.dir: policies",
                  config)
            check_keys(config, "src/config/raw.rs", "RawConfig", f"{name} keyward.yaml")
            check_keys(config["policy"], "src/config/raw.rs", "RawPolicy", f"{name} policy")
            check_keys(config["routes"][0], "src/config/raw.rs", "RawRoute", f"{name} route")
            check_keys(config["routes"][0]["credentials"][0], "src/config/raw.rs", "RawCredential", f"{name} credential")
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
    check_upgrade(check_default_install())
    check_configs_and_policy()
    check_migration_and_cert_manager()
    check_refusals()
    check_hand_written_pod()
    print(f"helm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

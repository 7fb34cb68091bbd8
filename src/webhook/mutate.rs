//! Pod mutation for the sidecar injector: a pure function from a Pod (JSON) and the injector's settings to a
//! JSONPatch. Pods without `keyward.dev/inject: "true"` and pods already injected get no patch.
//!
//! What an injected pod gets: the Keyward sidecar (a native sidecar, i.e. an init container with
//! `restartPolicy: Always`, so Jobs still complete; or a classic container for older clusters), its volumes,
//! and for each agent container the proxy and CA-trust environment, the placeholder variables and the trust
//! bundle mount. Existing environment variables of the same name are left alone: the pod's author wins.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

pub const INJECT: &str = "keyward.dev/inject";
pub const STATUS: &str = "keyward.dev/status";
pub const AGENT_ID: &str = "keyward.dev/agent-id";
pub const CONFIG: &str = "keyward.dev/config";
pub const CONTAINERS: &str = "keyward.dev/containers";
pub const EXCLUDE: &str = "keyward.dev/exclude-containers";
pub const NATIVE: &str = "keyward.dev/native-sidecar";
pub const CPU: &str = "keyward.dev/cpu";
pub const MEMORY: &str = "keyward.dev/memory";

const SIDECAR: &str = "keyward";
/// Where the sidecar writes the admin token it generates when no token Secret is configured: an in-memory
/// volume only the sidecar mounts, so the agent container cannot read it.
const GENERATED_TOKEN_DIR: &str = "/var/run/keyward/admin";
const GENERATED_TOKEN: &str = "/var/run/keyward/admin/token";
const TRUST_DIR: &str = "/var/run/keyward/trust";
const BUNDLE: &str = "/var/run/keyward/trust/ca-bundle.pem";

/// The injector's settings (a file the Helm chart renders from its values).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// Secret holding the interception CA (`ca.crt`, `ca.key`).
    pub ca_secret: String,
    /// ConfigMap with `keyward.yaml`, unless the pod names one in `keyward.dev/config`.
    pub default_config: String,
    /// Secret with the admin API token (key `token`), mounted at /etc/keyward/admin for `admin_token`. The
    /// admin listener has to be reachable by kubelet probes, so on a pod network it must not be open.
    #[serde(default)]
    pub admin_token_secret: Option<String>,
    #[serde(default = "default_true")]
    pub native_sidecar: bool,
    #[serde(default = "default_proxy_port")]
    pub proxy_port: u16,
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    #[serde(default = "default_no_proxy")]
    pub no_proxy: String,
    /// Placeholder environment variables for agent containers, e.g. `OPENAI_API_KEY: kw-placeholder-openai`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_true() -> bool {
    true
}
fn default_proxy_port() -> u16 {
    3128
}
fn default_admin_port() -> u16 {
    9901
}
fn default_no_proxy() -> String {
    "localhost,127.0.0.1,::1,.svc,.cluster.local".into()
}
fn default_cpu() -> String {
    "50m".into()
}
fn default_memory() -> String {
    "64Mi".into()
}

/// The JSONPatch operations for `pod`, or `None` when the pod is left alone.
pub fn patch(pod: &Value, settings: &Settings) -> Option<Vec<Value>> {
    let annotations = pod.pointer("/metadata/annotations").and_then(Value::as_object);
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    if annotation(INJECT) != Some("true") || annotation(STATUS) == Some("injected") || has_sidecar(pod) {
        return None;
    }
    let mut ops = Vec::new();
    let native = annotation(NATIVE).map_or(settings.native_sidecar, |v| v != "false");
    let agent_id = annotation(AGENT_ID)
        .map(str::to_string)
        .or_else(|| {
            pod.pointer("/metadata/labels/app")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            pod.pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "agent".into());
    let config_map = annotation(CONFIG).unwrap_or(&settings.default_config);

    let mut volumes = vec![
        json!({ "name": "keyward-config", "configMap": { "name": config_map } }),
        json!({ "name": "keyward-ca", "secret": { "secretName": settings.ca_secret, "defaultMode": 0o400 } }),
        json!({ "name": "keyward-trust", "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }),
    ];
    match &settings.admin_token_secret {
        Some(secret) => {
            volumes.push(json!({ "name": "keyward-admin", "secret": { "secretName": secret, "defaultMode": 0o400 } }))
        }
        // The sidecar generates a token; it goes to a volume only the sidecar mounts (the CA mount is read-only).
        None => {
            volumes.push(json!({ "name": "keyward-admin", "emptyDir": { "medium": "Memory", "sizeLimit": "1Ki" } }))
        }
    }
    append(&mut ops, pod.pointer("/spec/volumes"), "/spec/volumes", &volumes);

    let sidecar = sidecar(settings, &agent_id, native, annotation(CPU), annotation(MEMORY));
    if native {
        // First, so that it is up (its startup probe passes only once the trust bundle is written) before
        // the other init containers and the agent start.
        match pod.pointer("/spec/initContainers").and_then(Value::as_array) {
            Some(_) => ops.push(json!({ "op": "add", "path": "/spec/initContainers/0", "value": sidecar })),
            None => ops.push(json!({ "op": "add", "path": "/spec/initContainers", "value": [sidecar] })),
        }
    } else {
        ops.push(json!({ "op": "add", "path": "/spec/containers/0", "value": sidecar }));
    }

    let only: Option<Vec<&str>> = annotation(CONTAINERS).map(|v| v.split(',').map(str::trim).collect());
    let excluded: Vec<&str> = annotation(EXCLUDE).map_or_else(Vec::new, |v| v.split(',').map(str::trim).collect());
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Classic mode shifts the agent containers one place down.
    let shift = usize::from(!native);
    for (i, container) in containers.iter().enumerate() {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("");
        if excluded.contains(&name) || only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let base = format!("/spec/containers/{}", i + shift);
        let env = agent_env(settings);
        let existing: Vec<&str> = container
            .get("env")
            .and_then(Value::as_array)
            .map(|e| e.iter().filter_map(|v| v.get("name")?.as_str()).collect())
            .unwrap_or_default();
        let new: Vec<Value> = env
            .into_iter()
            .filter(|e| !existing.contains(&e["name"].as_str().unwrap_or("")))
            .collect();
        append(&mut ops, container.get("env"), &format!("{base}/env"), &new);
        let mount = json!({ "name": "keyward-trust", "mountPath": TRUST_DIR, "readOnly": true });
        append(
            &mut ops,
            container.get("volumeMounts"),
            &format!("{base}/volumeMounts"),
            &[mount],
        );
    }
    if annotations.is_none() {
        ops.push(json!({ "op": "add", "path": "/metadata/annotations", "value": { STATUS: "injected" } }));
    } else {
        ops.push(
            json!({ "op": "add", "path": format!("/metadata/annotations/{}", escape(STATUS)), "value": "injected" }),
        );
    }
    Some(ops)
}

fn has_sidecar(pod: &Value) -> bool {
    ["/spec/containers", "/spec/initContainers"].iter().any(|p| {
        pod.pointer(p).and_then(Value::as_array).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR))
        })
    })
}

/// Adds `items` to the array at `path`, creating the array when there is none (`existing`).
fn append(ops: &mut Vec<Value>, existing: Option<&Value>, path: &str, items: &[Value]) {
    if items.is_empty() {
        return;
    }
    if existing.and_then(Value::as_array).is_some() {
        for item in items {
            ops.push(json!({ "op": "add", "path": format!("{path}/-"), "value": item }));
        }
    } else {
        ops.push(json!({ "op": "add", "path": path, "value": items }));
    }
}

fn agent_env(settings: &Settings) -> Vec<Value> {
    let proxy = format!("http://127.0.0.1:{}", settings.proxy_port);
    let mut env: Vec<(String, String)> = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"]
        .iter()
        .map(|k| (k.to_string(), proxy.clone()))
        .chain(
            ["NO_PROXY", "no_proxy"]
                .iter()
                .map(|k| (k.to_string(), settings.no_proxy.clone())),
        )
        .chain(
            [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO",
            ]
            .iter()
            .map(|k| (k.to_string(), BUNDLE.to_string())),
        )
        .collect();
    env.extend(settings.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect()
}

fn sidecar(settings: &Settings, agent_id: &str, native: bool, cpu: Option<&str>, memory: Option<&str>) -> Value {
    let resources = json!({
        "requests": { "cpu": cpu.unwrap_or(&settings.cpu), "memory": memory.unwrap_or(&settings.memory) },
        "limits": { "memory": memory.unwrap_or(&settings.memory) },
    });
    let mut container = json!({
        "name": SIDECAR,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["run", "--config", "/etc/keyward/keyward.yaml", "--trust-bundle", BUNDLE],
        "env": [
            { "name": "KEYWARD_AGENT_ID", "value": agent_id },
            { "name": "KEYWARD_LOG_FORMAT", "value": "json" },
        ],
        "ports": [
            { "name": "keyward-proxy", "containerPort": settings.proxy_port },
            { "name": "keyward-admin", "containerPort": settings.admin_port },
        ],
        "volumeMounts": [
            { "name": "keyward-config", "mountPath": "/etc/keyward", "readOnly": true },
            { "name": "keyward-ca", "mountPath": "/etc/keyward/ca", "readOnly": true },
            { "name": "keyward-trust", "mountPath": TRUST_DIR },
        ],
        "startupProbe": { "httpGet": { "path": "/readyz", "port": settings.admin_port }, "periodSeconds": 1, "failureThreshold": 120 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": settings.admin_port }, "periodSeconds": 5 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": settings.admin_port }, "periodSeconds": 10 },
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    let mount = match settings.admin_token_secret {
        Some(_) => json!({ "name": "keyward-admin", "mountPath": "/etc/keyward/admin", "readOnly": true }),
        None => {
            container["env"]
                .as_array_mut()
                .expect("built above")
                .push(json!({ "name": "KEYWARD_ADMIN_TOKEN_FILE", "value": GENERATED_TOKEN }));
            json!({ "name": "keyward-admin", "mountPath": GENERATED_TOKEN_DIR })
        }
    };
    container["volumeMounts"]
        .as_array_mut()
        .expect("built above")
        .push(mount);
    if native {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// JSON Pointer escaping (RFC 6901) of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::yaml::parse(
            "image: ghcr.io/keyward/keyward:0.1.0\nca_secret: keyward-ca\ndefault_config: keyward-config\nenv:\n  OPENAI_API_KEY: kw-placeholder-openai\n",
        )
        .unwrap()
    }

    fn pod(annotations: Value, spec: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "agent", "annotations": annotations, "labels": { "app": "sales-bot" } }, "spec": spec })
    }

    /// Applies the patch as the API server would, and checks that a second review of the result is a no-op.
    fn injected(pod: &Value) -> Value {
        let ops = patch(pod, &settings()).expect("a patch");
        let mut out = pod.clone();
        json_patch::patch(
            &mut out,
            &serde_json::from_value::<json_patch::Patch>(Value::Array(ops)).unwrap(),
        )
        .unwrap();
        assert!(patch(&out, &settings()).is_none(), "mutation is idempotent");
        out
    }

    fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
    }

    fn sidecars(pod: &Value) -> usize {
        ["containers", "initContainers"]
            .iter()
            .filter_map(|k| pod["spec"][k].as_array())
            .flatten()
            .filter(|c| c["name"] == "keyward")
            .count()
    }

    #[test]
    fn pods_without_the_annotation_are_not_touched() {
        assert!(patch(
            &pod(json!({}), json!({ "containers": [{ "name": "app", "image": "a" }] })),
            &settings()
        )
        .is_none());
        assert!(patch(
            &pod(json!({ INJECT: "false" }), json!({ "containers": [{ "name": "app" }] })),
            &settings()
        )
        .is_none());
        let no_annotations = json!({ "metadata": { "name": "x" }, "spec": { "containers": [{ "name": "app" }] } });
        assert!(patch(&no_annotations, &settings()).is_none());
    }

    #[test]
    fn a_single_container_pod_gets_a_native_sidecar_env_trust_and_placeholders() {
        let out = injected(&pod(
            json!({ INJECT: "true" }),
            json!({ "containers": [{ "name": "app", "image": "agent:1" }] }),
        ));
        assert_eq!(sidecars(&out), 1);
        let sidecar = &out["spec"]["initContainers"][0];
        assert_eq!(sidecar["restartPolicy"], "Always", "native sidecar: Jobs complete");
        assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
        assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(sidecar["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(env(sidecar, "KEYWARD_AGENT_ID"), Some("sales-bot"));
        let app = &out["spec"]["containers"][0];
        assert_eq!(env(app, "HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(
            env(app, "no_proxy"),
            Some("localhost,127.0.0.1,::1,.svc,.cluster.local")
        );
        for var in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            assert_eq!(env(app, var), Some(BUNDLE), "{var}");
        }
        assert_eq!(env(app, "OPENAI_API_KEY"), Some("kw-placeholder-openai"));
        assert_eq!(app["volumeMounts"][0]["mountPath"], TRUST_DIR);
        assert_eq!(
            app["volumeMounts"].as_array().unwrap().len(),
            1,
            "the agent never mounts the admin token"
        );
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 4);
        let sidecar = &out["spec"]["initContainers"][0];
        assert_eq!(env(sidecar, "KEYWARD_ADMIN_TOKEN_FILE"), Some(GENERATED_TOKEN));
        assert!(sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == GENERATED_TOKEN_DIR));
        assert_eq!(out["metadata"]["annotations"][STATUS], "injected");
        assert_eq!(
            out["spec"]["containers"][0]["image"], "agent:1",
            "the agent container is otherwise untouched"
        );
    }

    #[test]
    fn existing_init_containers_env_and_volumes_are_kept() {
        let spec = json!({
            "initContainers": [{ "name": "migrate", "image": "m" }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
            "containers": [{
                "name": "app",
                "env": [{ "name": "HTTPS_PROXY", "value": "http://corp-proxy:8080" }, { "name": "KEEP", "value": "1" }],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
        });
        let out = injected(&pod(json!({ INJECT: "true", AGENT_ID: "explicit-id" }), spec));
        assert_eq!(
            out["spec"]["initContainers"][0]["name"], "keyward",
            "first, before other init containers"
        );
        assert_eq!(out["spec"]["initContainers"][1]["name"], "migrate");
        assert_eq!(
            env(&out["spec"]["initContainers"][0], "KEYWARD_AGENT_ID"),
            Some("explicit-id")
        );
        let app = &out["spec"]["containers"][0];
        assert_eq!(
            env(app, "HTTPS_PROXY"),
            Some("http://corp-proxy:8080"),
            "the pod author's value wins"
        );
        assert_eq!(env(app, "KEEP"), Some("1"));
        assert_eq!(env(app, "SSL_CERT_FILE"), Some(BUNDLE));
        assert_eq!(app["volumeMounts"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn container_selection_and_classic_mode() {
        let spec = json!({ "containers": [{ "name": "agent" }, { "name": "metrics" }, { "name": "tool" }] });
        let out = injected(&pod(
            json!({ INJECT: "true", CONTAINERS: "agent, tool", EXCLUDE: "tool", NATIVE: "false" }),
            spec,
        ));
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers[0]["name"], "keyward", "classic sidecar container");
        assert!(containers[0].get("restartPolicy").is_none());
        assert!(out["spec"].get("initContainers").is_none());
        assert_eq!(
            env(&containers[1], "HTTPS_PROXY"),
            Some("http://127.0.0.1:3128"),
            "agent selected"
        );
        assert!(containers[2].get("env").is_none(), "metrics not selected");
        assert!(containers[3].get("env").is_none(), "tool excluded");
    }

    #[test]
    fn the_admin_token_secret_is_mounted_when_configured() {
        let mut with_token = settings();
        with_token.admin_token_secret = Some("keyward-admin-token".into());
        let pod = pod(json!({ INJECT: "true" }), json!({ "containers": [{ "name": "app" }] }));
        let ops = patch(&pod, &with_token).unwrap();
        let mut out = pod.clone();
        json_patch::patch(
            &mut out,
            &serde_json::from_value::<json_patch::Patch>(Value::Array(ops)).unwrap(),
        )
        .unwrap();
        assert!(out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "keyward-admin-token"));
        let mounts = out["spec"]["initContainers"][0]["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mountPath"] == "/etc/keyward/admin"));
        assert!(
            out["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["name"] != "keyward-admin"),
            "the agent never sees it"
        );
    }

    #[test]
    fn already_injected_pods_are_left_alone() {
        let marked = pod(
            json!({ INJECT: "true", STATUS: "injected" }),
            json!({ "containers": [{ "name": "app" }] }),
        );
        assert!(patch(&marked, &settings()).is_none());
        let has_sidecar = pod(
            json!({ INJECT: "true" }),
            json!({ "containers": [{ "name": "app" }, { "name": "keyward" }] }),
        );
        assert!(patch(&has_sidecar, &settings()).is_none());
    }
}

//! Pod mutation for the sidecar injector: a pure function from a Pod (JSON) and the injector's settings to a
//! JSONPatch. Pods without `keyward.dev/inject: "true"` and pods already injected get no patch.
//!
//! What an injected pod gets: the Keyward sidecar (a native sidecar, i.e. an init container with
//! `restartPolicy: Always`, so Jobs still complete; or a classic container for older clusters), its volumes,
//! and for each agent container the proxy and CA-trust environment, the placeholder variables and the trust
//! bundle mount. Existing environment variables of the same name are left alone: the pod's author wins.
//!
//! An injected pod names no Secret and no ConfigMap: it runs in the agent's namespace, and those of the chart
//! live in the controller's. The sidecar fetches its configuration (`keyward.dev/config`, else the default)
//! and its intermediate CA from `keyward controller`, authenticated by a projected service-account token of
//! the controller's audience; it logs in to Vault with another token, of Vault's audience; it trusts the
//! controller by the CA certificate written inline into its environment (public); and it generates its own
//! admin token. Its volumes are emptyDirs and those two tokens, which only the sidecar mounts: the agent
//! containers mount the trust bundle and nothing else.

use serde_json::{json, Value};

pub const INJECT: &str = "keyward.dev/inject";
pub const STATUS: &str = "keyward.dev/status";
/// Set on injected pods when an agent container sets proxy or trust variables itself: `container/NAME,...`.
pub const ENV_KEPT: &str = "keyward.dev/env-kept";
pub const AGENT_ID: &str = "keyward.dev/agent-id";
/// The name of the proxy configuration the sidecar fetches from the controller.
pub const CONFIG: &str = "keyward.dev/config";
pub const CONTAINERS: &str = "keyward.dev/containers";
pub const EXCLUDE: &str = "keyward.dev/exclude-containers";
pub const NATIVE: &str = "keyward.dev/native-sidecar";
pub const CPU: &str = "keyward.dev/cpu";
pub const MEMORY: &str = "keyward.dev/memory";
/// `transparent`: an init container redirects the pod's outbound TCP to the sidecar (iptables), so clients
/// that ignore the proxy variables go through Keyward too. `none` (default): proxy variables only.
pub const CAPTURE: &str = "keyward.dev/capture";
/// The Keyward version that injected the pod.
pub const VERSION: &str = "keyward.dev/version";

/// The projected token the sidecar logs in to Vault with (`secrets.vault.auth.kubernetes.jwt_path` of the
/// configurations the chart renders).
pub const VAULT_TOKEN: &str = "/var/run/secrets/keyward/vault/token";

pub use super::settings::Settings;

use super::containers::{
    capture_container, sidecar, token_volume, BUNDLE, CAPTURE_RUN_VOLUME, CONFIG_VOLUME, CONTROLLER_TOKEN_VOLUME,
    RUN_VOLUME, SIDECAR, TRUST_DIR, TRUST_VOLUME, VAULT_TOKEN_VOLUME,
};

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
    let config = annotation(CONFIG).unwrap_or(&settings.default_config);

    let capture = annotation(CAPTURE) == Some("transparent");
    let expiration = settings.token_expiration_seconds;
    let mut volumes = vec![
        // Only the sidecar mounts these two; it writes its admin token and its fetched configuration there.
        json!({ "name": RUN_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "64Ki" } }),
        json!({ "name": CONFIG_VOLUME, "emptyDir": { "sizeLimit": "4Mi" } }),
        // The trust bundle: written by the sidecar, read by the agent containers.
        json!({ "name": TRUST_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }),
        token_volume(CONTROLLER_TOKEN_VOLUME, &settings.controller_audience, expiration),
        token_volume(VAULT_TOKEN_VOLUME, &settings.vault_audience, expiration),
    ];
    if capture {
        volumes.push(json!({ "name": CAPTURE_RUN_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }));
    }
    append(&mut ops, pod.pointer("/spec/volumes"), "/spec/volumes", &volumes);

    let sidecar = sidecar(settings, &agent_id, config, native, annotation(CPU), annotation(MEMORY));
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
    if capture {
        // Before everything, the sidecar included: no container of the pod opens a connection uncaptured.
        let init = capture_container(settings);
        match (native, pod.pointer("/spec/initContainers").and_then(Value::as_array)) {
            (false, None) => ops.push(json!({ "op": "add", "path": "/spec/initContainers", "value": [init] })),
            _ => ops.push(json!({ "op": "add", "path": "/spec/initContainers/0", "value": init })),
        }
    }

    let only: Option<Vec<&str>> = annotation(CONTAINERS).map(|v| v.split(',').map(str::trim).collect());
    let excluded: Vec<&str> = annotation(EXCLUDE).map_or_else(Vec::new, |v| v.split(',').map(str::trim).collect());
    // The pod's containers, with the path each has after the sidecar (and the capture container) went in
    // before them. A native sidecar is up before the pod's own init containers run, so they are agents too;
    // a classic one starts only after them.
    let at = |list: &str, shift: usize| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| (format!("/spec/{list}/{}", i + shift), c.clone()))
            .collect::<Vec<_>>()
    };
    let mut containers = at("containers", usize::from(!native));
    if native {
        containers.extend(at("initContainers", 1 + usize::from(capture)));
    }
    let no_proxy: Vec<String> = settings
        .no_proxy
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let proxied = crate::agent_env::Proxied {
        proxy_host: "127.0.0.1",
        proxy_port: settings.proxy_port,
        bundle: BUNDLE,
        no_proxy: &no_proxy,
        placeholders: &settings.env,
    };
    // Variables the agent sets itself, left alone: named in an annotation so the pod's owner can see why
    // a container does not go through Keyward.
    let mut kept: Vec<String> = Vec::new();
    for (base, container) in &containers {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("");
        if excluded.contains(&name) || only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let existing: Vec<&str> = container
            .get("env")
            .and_then(Value::as_array)
            .map(|e| e.iter().filter_map(|v| v.get("name")?.as_str()).collect())
            .unwrap_or_default();
        let planned = crate::agent_env::plan(&proxied, |name| existing.contains(&name));
        kept.extend(planned.left_alone.iter().map(|n| format!("{name}/{n}")));
        let new: Vec<Value> = planned
            .set
            .into_iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        append(&mut ops, container.get("env"), &format!("{base}/env"), &new);
        let mount = json!({ "name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": true });
        append(
            &mut ops,
            container.get("volumeMounts"),
            &format!("{base}/volumeMounts"),
            &[mount],
        );
    }
    let mut added = serde_json::Map::new();
    added.insert(STATUS.into(), json!("injected"));
    added.insert(VERSION.into(), json!(env!("CARGO_PKG_VERSION")));
    if !kept.is_empty() {
        added.insert(ENV_KEPT.into(), json!(kept.join(",")));
    }
    if annotations.is_none() {
        ops.push(json!({ "op": "add", "path": "/metadata/annotations", "value": added }));
    } else {
        for (key, value) in added {
            ops.push(json!({ "op": "add", "path": format!("/metadata/annotations/{}", escape(&key)), "value": value }));
        }
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

/// JSON Pointer escaping (RFC 6901) of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::containers::{
        ADMIN_TOKEN, CONFIG_DIR, CONFIG_FILE, CONTROLLER_TOKEN_DIR, RUN_DIR, VAULT_TOKEN_DIR,
    };

    const CONTROLLER_URL: &str = "https://keyward-controller.keyward.svc:443";
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkeywardControllerCA\n-----END CERTIFICATE-----\n";
    const SETTINGS: &str = "image: ghcr.io/keyward/keyward:0.1.0
controller_url: https://keyward-controller.keyward.svc:443
controller_ca: |
  -----BEGIN CERTIFICATE-----
  MIIBkeywardControllerCA
  -----END CERTIFICATE-----
env:
  OPENAI_API_KEY: kw-placeholder-openai
";

    fn settings() -> Settings {
        crate::yaml::parse(SETTINGS).unwrap()
    }

    fn pod(annotations: Value, spec: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "agent", "annotations": annotations, "labels": { "app": "sales-bot" } }, "spec": spec })
    }

    /// Applies the patch as the API server would, and checks that a second review of the result is a no-op.
    fn injected_with(pod: &Value, settings: &Settings) -> Value {
        let ops = patch(pod, settings).expect("a patch");
        let mut out = pod.clone();
        json_patch::patch(
            &mut out,
            &serde_json::from_value::<json_patch::Patch>(Value::Array(ops)).unwrap(),
        )
        .unwrap();
        assert!(patch(&out, settings).is_none(), "mutation is idempotent");
        out
    }

    fn injected(pod: &Value) -> Value {
        injected_with(pod, &settings())
    }

    fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
    }

    /// The value after `name` in the container's args.
    fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        let args = container["args"].as_array()?;
        let at = args.iter().position(|a| a == name)?;
        args.get(at + 1)?.as_str()
    }

    fn mounts(container: &Value) -> Vec<&Value> {
        container["volumeMounts"]
            .as_array()
            .map(|m| m.iter().collect())
            .unwrap_or_default()
    }

    /// Every container of the pod, init containers first.
    fn all_containers(pod: &Value) -> Vec<&Value> {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|k| pod["spec"][k].as_array())
            .flatten()
            .collect()
    }

    fn sidecars(pod: &Value) -> usize {
        all_containers(pod).iter().filter(|c| c["name"] == "keyward").count()
    }

    /// Every object key anywhere in `value`.
    fn keys(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            Value::Array(items) => {
                for v in items {
                    keys(v, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn settings_defaults_and_what_is_refused() {
        let s = settings();
        assert_eq!(s.default_config, "default");
        assert_eq!(s.controller_audience, "keyward");
        assert_eq!(s.vault_audience, "vault");
        assert_eq!(s.token_expiration_seconds, 3600);
        assert_eq!(s.controller_ca, CA_PEM);
        assert!(s.controller_ca_file.is_none());
        assert_eq!(s.check(), Ok(()));

        let mut plain = settings();
        plain.controller_url = "http://keyward-controller.keyward.svc".into();
        assert!(plain.check().is_err(), "the controller is reached over TLS only");
        let mut no_ca = settings();
        no_ca.controller_ca = String::new();
        assert!(
            no_ca.check().is_err(),
            "without the CA the sidecar cannot trust the controller"
        );
        let mut short = settings();
        short.token_expiration_seconds = 599;
        assert!(
            short.check().is_err(),
            "the API server refuses projected tokens under 10 minutes"
        );
        let mut unnamed = settings();
        unnamed.default_config = String::new();
        assert!(unnamed.check().is_err());

        // The old shape named Secrets and ConfigMaps of the chart's namespace: refused, not silently ignored.
        for old in ["ca_secret: keyward-ca", "admin_token_secret: keyward-admin-token"] {
            let text = format!("{SETTINGS}{old}\n");
            assert!(crate::yaml::parse::<Settings>(&text).is_err(), "{old}");
        }
        let tuned: Settings = crate::yaml::parse(&format!(
            "{SETTINGS}default_config: research\ncontroller_audience: kw\nvault_audience: bao\ntoken_expiration_seconds: 7200\n"
        ))
        .unwrap();
        assert_eq!(
            (
                tuned.default_config.as_str(),
                tuned.controller_audience.as_str(),
                tuned.vault_audience.as_str(),
                tuned.token_expiration_seconds
            ),
            ("research", "kw", "bao", 7200)
        );
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
        // The sidecar's command line, as `keyward run` takes it in controller mode.
        assert_eq!(
            sidecar["args"],
            json!([
                "run",
                "--config",
                "/var/run/keyward/config/keyward.yaml",
                "--controller",
                CONTROLLER_URL,
                "--controller-config",
                "default",
                "--controller-token",
                "/var/run/secrets/keyward/controller/token",
                "--trust-bundle",
                "/var/run/keyward/trust/ca-bundle.pem",
                "--admin-token-file",
                "/var/run/keyward/admin.token",
            ])
        );
        assert_eq!(
            env(sidecar, "KEYWARD_CONTROLLER_CA_PEM"),
            Some(CA_PEM),
            "the controller's CA, inline"
        );
        assert_eq!(env(sidecar, "KEYWARD_ADMIN_TOKEN_FILE"), Some(ADMIN_TOKEN));
        assert_eq!(env(sidecar, "KEYWARD_CONFIG"), Some(CONFIG_FILE));
        let sidecar_mounts: Vec<(&str, bool)> = mounts(sidecar)
            .iter()
            .map(|m| (m["mountPath"].as_str().unwrap(), m["readOnly"] == true))
            .collect();
        assert_eq!(
            sidecar_mounts,
            [
                (RUN_DIR, false),
                (CONFIG_DIR, false),
                (TRUST_DIR, false),
                (CONTROLLER_TOKEN_DIR, true),
                (VAULT_TOKEN_DIR, true),
            ]
        );
        let app = &out["spec"]["containers"][0];
        assert_eq!(env(app, "HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(
            env(app, "no_proxy"),
            Some("localhost,127.0.0.1,::1,.svc,.svc.cluster.local,.cluster.local,$(KUBERNETES_SERVICE_HOST)")
        );
        for var in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "AWS_CA_BUNDLE",
            "DENO_CERT",
        ] {
            assert_eq!(env(app, var), Some(BUNDLE), "{var}");
        }
        assert_eq!(env(app, "NODE_USE_ENV_PROXY"), Some("1"));
        assert!(env(app, "JAVA_TOOL_OPTIONS")
            .unwrap()
            .contains("-Djavax.net.ssl.trustStore=/var/run/keyward/trust/ca-bundle.p12"));
        assert_eq!(env(app, "OPENAI_API_KEY"), Some("kw-placeholder-openai"));
        assert_eq!(app["volumeMounts"][0]["mountPath"], TRUST_DIR);
        assert_eq!(app["volumeMounts"][0]["readOnly"], true);
        assert_eq!(
            app["volumeMounts"].as_array().unwrap().len(),
            1,
            "the agent mounts the trust bundle and nothing else (no admin token, no configuration, no tokens)"
        );
        assert!(env(app, "KEYWARD_CONTROLLER_CA_PEM").is_none());
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 5);
        assert_eq!(out["metadata"]["annotations"][STATUS], "injected");
        assert_eq!(
            out["spec"]["containers"][0]["image"], "agent:1",
            "the agent container is otherwise untouched"
        );
    }

    #[test]
    fn an_injected_pod_references_no_secret_and_no_config_map() {
        for annotations in [
            json!({ INJECT: "true" }),
            json!({ INJECT: "true", NATIVE: "false", CONFIG: "research" }),
        ] {
            let pod = pod(
                annotations,
                json!({ "containers": [{ "name": "app" }, { "name": "tool" }] }),
            );
            let ops = patch(&pod, &settings()).unwrap();
            let mut found = Vec::new();
            keys(&Value::Array(ops.clone()), &mut found);
            for forbidden in [
                "secret",
                "secretName",
                "secretRef",
                "secretKeyRef",
                "configMap",
                "configMapRef",
                "configMapKeyRef",
            ] {
                assert!(!found.iter().any(|k| k == forbidden), "{forbidden} in {ops:?}");
            }
            let out = injected(&pod);
            for volume in out["spec"]["volumes"].as_array().unwrap() {
                let kind: Vec<&str> = volume
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "name")
                    .collect();
                assert!(kind == ["emptyDir"] || kind == ["projected"], "{volume}");
                for source in volume["projected"]["sources"].as_array().into_iter().flatten() {
                    let only_token = source.as_object().unwrap().keys().all(|k| k == "serviceAccountToken");
                    assert!(only_token, "a projected volume holds tokens only: {source}");
                }
            }
        }
    }

    #[test]
    fn the_token_volumes_are_mounted_in_the_sidecar_only() {
        for native in ["true", "false"] {
            let out = injected(&pod(
                json!({ INJECT: "true", NATIVE: native }),
                json!({
                    "initContainers": [{ "name": "migrate", "image": "m" }],
                    "volumes": [{ "name": "data", "emptyDir": {} }],
                    "containers": [
                        { "name": "app" },
                        { "name": "tool", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
                    ],
                }),
            ));
            let volumes = out["spec"]["volumes"].as_array().unwrap();
            for (name, audience, dir) in [
                (CONTROLLER_TOKEN_VOLUME, "keyward", CONTROLLER_TOKEN_DIR),
                (VAULT_TOKEN_VOLUME, "vault", VAULT_TOKEN_DIR),
            ] {
                let volume = volumes
                    .iter()
                    .find(|v| v["name"] == name)
                    .unwrap_or_else(|| panic!("no volume {name}"));
                let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
                assert_eq!(token["audience"], audience, "{name}");
                assert_eq!(token["expirationSeconds"], 3600, "{name}");
                assert_eq!(token["path"], "token", "{name}");
                let containers = all_containers(&out);
                let mounting: Vec<&str> = containers
                    .iter()
                    .filter(|c| mounts(c).iter().any(|m| m["name"] == name))
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                assert_eq!(mounting, ["keyward"], "{name} (native: {native})");
                let sidecar = containers.iter().find(|c| c["name"] == "keyward").unwrap();
                let mount = mounts(sidecar).into_iter().find(|m| m["name"] == name).unwrap();
                assert_eq!(mount["mountPath"], dir);
                assert_eq!(mount["readOnly"], true);
            }
            // The sidecar's own directory (admin token) and its configuration are not the agents' either.
            for name in [RUN_VOLUME, CONFIG_VOLUME] {
                let mounting = all_containers(&out)
                    .iter()
                    .filter(|c| mounts(c).iter().any(|m| m["name"] == name))
                    .count();
                assert_eq!(mounting, 1, "{name} (native: {native})");
            }
        }
        assert_eq!(
            format!("{VAULT_TOKEN_DIR}/token"),
            VAULT_TOKEN,
            "the path the chart's configurations log in to Vault with"
        );
    }

    #[test]
    fn the_config_annotation_names_the_configuration_the_sidecar_fetches() {
        let spec = || json!({ "containers": [{ "name": "app" }] });
        let default = injected(&pod(json!({ INJECT: "true" }), spec()));
        let sidecar = &default["spec"]["initContainers"][0];
        assert_eq!(flag(sidecar, "--controller-config"), Some("default"));
        assert_eq!(flag(sidecar, "--controller"), Some(CONTROLLER_URL));

        let chosen = injected(&pod(json!({ INJECT: "true", CONFIG: "research" }), spec()));
        assert_eq!(
            flag(&chosen["spec"]["initContainers"][0], "--controller-config"),
            Some("research")
        );

        let mut fleet = settings();
        fleet.default_config = "fleet".into();
        let out = injected_with(&pod(json!({ INJECT: "true" }), spec()), &fleet);
        assert_eq!(
            flag(&out["spec"]["initContainers"][0], "--controller-config"),
            Some("fleet"),
            "the injector's default when the pod names none"
        );
        let out = injected_with(&pod(json!({ INJECT: "true", CONFIG: "research" }), spec()), &fleet);
        assert_eq!(
            flag(&out["spec"]["initContainers"][0], "--controller-config"),
            Some("research"),
            "the pod's choice wins"
        );
    }

    #[test]
    fn audiences_and_token_lifetime_come_from_the_settings() {
        let mut tuned = settings();
        tuned.controller_audience = "keyward-prod".into();
        tuned.vault_audience = "https://vault.example.com".into();
        tuned.token_expiration_seconds = 7200;
        let out = injected_with(
            &pod(json!({ INJECT: "true" }), json!({ "containers": [{ "name": "app" }] })),
            &tuned,
        );
        let token = |name: &str| -> Value {
            out["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap()["projected"]["sources"][0]["serviceAccountToken"]
                .clone()
        };
        assert_eq!(token(CONTROLLER_TOKEN_VOLUME)["audience"], "keyward-prod");
        assert_eq!(token(VAULT_TOKEN_VOLUME)["audience"], "https://vault.example.com");
        assert_eq!(token(CONTROLLER_TOKEN_VOLUME)["expirationSeconds"], 7200);
        assert_eq!(token(VAULT_TOKEN_VOLUME)["expirationSeconds"], 7200);
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
        assert_eq!(
            env(app, "https_proxy"),
            None,
            "its lower-case twin is the same setting: not set beside it, whatever a runtime prefers"
        );
        assert_eq!(env(app, "HTTP_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(
            out["metadata"]["annotations"][ENV_KEPT], "app/HTTPS_PROXY",
            "the pod says which variables were left alone"
        );
        assert_eq!(env(app, "KEEP"), Some("1"));
        assert_eq!(env(app, "SSL_CERT_FILE"), Some(BUNDLE));
        assert_eq!(app["volumeMounts"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 6);
        assert_eq!(
            out["spec"]["volumes"][0]["name"], "data",
            "the pod's own volume is kept first"
        );
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
        assert!(
            containers[2].get("volumeMounts").is_none(),
            "metrics mounts nothing of Keyward's"
        );
    }

    #[test]
    fn injected_pods_carry_the_version() {
        let out = injected(&pod(
            json!({ INJECT: "true" }),
            json!({ "containers": [{ "name": "agent" }] }),
        ));
        assert_eq!(out["metadata"]["annotations"][VERSION], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn capture_adds_a_first_init_container_with_net_admin_only() {
        let mut s = settings();
        s.capture.exclude_cidrs = vec!["10.96.0.0/12".into()];
        let out = injected_with(
            &pod(
                json!({ INJECT: "true", CAPTURE: "transparent" }),
                json!({ "initContainers": [{ "name": "migrate", "image": "m" }], "containers": [{ "name": "agent" }] }),
            ),
            &s,
        );
        let inits: Vec<&str> = out["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            inits,
            ["keyward-capture", "keyward", "migrate"],
            "capture first, then the sidecar"
        );
        let capture = &out["spec"]["initContainers"][0];
        assert_eq!(
            capture["args"],
            json!([
                "iptables",
                "install",
                "--proxy-uid",
                "65532",
                "--proxy-port",
                "15001",
                "--exclude-cidrs",
                "10.96.0.0/12",
                "--drop-quic"
            ])
        );
        let sc = &capture["securityContext"];
        assert_eq!(
            sc["capabilities"],
            json!({ "drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"] })
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert!(capture.get("restartPolicy").is_none(), "it runs once, to completion");
        assert_eq!(
            out["spec"]["initContainers"][1]["securityContext"]["runAsUser"], 65532,
            "the uid the rules exempt is the sidecar's"
        );
        // The proxy variables stay: clients that honour them use the CONNECT listener, the rest are captured.
        assert!(env(&out["spec"]["containers"][0], "HTTPS_PROXY").is_some());
        // Without the annotation: no capture container, no extra volume.
        let plain = injected(&pod(
            json!({ INJECT: "true" }),
            json!({ "containers": [{ "name": "agent" }] }),
        ));
        assert_eq!(plain["spec"]["initContainers"].as_array().unwrap().len(), 1);
        assert!(!plain.to_string().contains("keyward-capture"));
    }

    #[test]
    fn init_containers_after_a_native_sidecar_go_through_it_too() {
        let out = injected(&pod(
            json!({ INJECT: "true" }),
            json!({ "initContainers": [{ "name": "fetch-model", "image": "f" }], "containers": [{ "name": "agent" }] }),
        ));
        let init = &out["spec"]["initContainers"][1];
        assert_eq!(init["name"], "fetch-model");
        assert_eq!(env(init, "HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        // A classic sidecar is not running while init containers run: they are left alone.
        let classic = injected(&pod(
            json!({ INJECT: "true", NATIVE: "false" }),
            json!({ "initContainers": [{ "name": "fetch-model", "image": "f" }], "containers": [{ "name": "agent" }] }),
        ));
        assert!(env(&classic["spec"]["initContainers"][0], "HTTPS_PROXY").is_none());
        assert!(env(&classic["spec"]["containers"][1], "HTTPS_PROXY").is_some());
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

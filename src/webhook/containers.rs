//! What the webhook puts into an injected pod: the sidecar container, the capture init container and the
//! projected-token volumes, with the paths and names they share. [`super::mutate`] decides where they go.

use serde_json::{json, Value};

use super::settings::Settings;

pub(super) const SIDECAR: &str = "keyward";
pub(super) const CAPTURE_CONTAINER: &str = "keyward-capture";
/// The sidecar's uid: the one connection owner the capture rules leave alone.
pub(super) const SIDECAR_UID: u32 = 65532;
/// The sidecar's own directory; only the sidecar mounts it. The admin token it generates is written here.
pub(super) const RUN_DIR: &str = "/var/run/keyward";
pub(super) const ADMIN_TOKEN: &str = "/var/run/keyward/admin.token";
/// Where the sidecar writes the configuration it fetches (`keyward.yaml`, and the Rego files under `policies/`).
pub(super) const CONFIG_DIR: &str = "/var/run/keyward/config";
pub(super) const CONFIG_FILE: &str = "/var/run/keyward/config/keyward.yaml";
pub(super) const TRUST_DIR: &str = "/var/run/keyward/trust";
pub(super) const BUNDLE: &str = "/var/run/keyward/trust/ca-bundle.pem";
pub(super) const CONTROLLER_TOKEN_DIR: &str = "/var/run/secrets/keyward/controller";
pub(super) const CONTROLLER_TOKEN: &str = "/var/run/secrets/keyward/controller/token";
pub(super) const VAULT_TOKEN_DIR: &str = "/var/run/secrets/keyward/vault";

pub(super) const RUN_VOLUME: &str = "keyward-run";
pub(super) const CONFIG_VOLUME: &str = "keyward-config";
pub(super) const TRUST_VOLUME: &str = "keyward-trust";
pub(super) const CONTROLLER_TOKEN_VOLUME: &str = "keyward-controller-token";
pub(super) const VAULT_TOKEN_VOLUME: &str = "keyward-vault-token";
/// iptables' lock file under /run, for the capture container (its root filesystem is read-only).
pub(super) const CAPTURE_RUN_VOLUME: &str = "keyward-capture-run";

/// A projected service-account token for `audience`, as `token` in the volume; the kubelet renews it.
pub(super) fn token_volume(name: &str, audience: &str, expiration_seconds: u32) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [{
                "serviceAccountToken": { "audience": audience, "expirationSeconds": expiration_seconds, "path": "token" },
            }],
        },
    })
}

pub(super) fn sidecar(
    settings: &Settings,
    agent_id: &str,
    config: &str,
    native: bool,
    cpu: Option<&str>,
    memory: Option<&str>,
) -> Value {
    let resources = json!({
        "requests": { "cpu": cpu.unwrap_or(&settings.cpu), "memory": memory.unwrap_or(&settings.memory) },
        "limits": { "memory": memory.unwrap_or(&settings.memory) },
    });
    let mut container = json!({
        "name": SIDECAR,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": [
            "run",
            "--config", CONFIG_FILE,
            "--controller", settings.controller_url,
            "--controller-config", config,
            "--controller-token", CONTROLLER_TOKEN,
            "--trust-bundle", BUNDLE,
            "--admin-token-file", ADMIN_TOKEN,
        ],
        "env": [
            { "name": "KEYWARD_AGENT_ID", "value": agent_id },
            { "name": "KEYWARD_LOG_FORMAT", "value": "json" },
            { "name": "KEYWARD_CONTROLLER_CA_PEM", "value": settings.controller_ca },
            // What `kubectl exec -c keyward -- keyward admin ...` needs to find the running proxy's files.
            { "name": "KEYWARD_CONFIG", "value": CONFIG_FILE },
            { "name": "KEYWARD_ADMIN_TOKEN_FILE", "value": ADMIN_TOKEN },
        ],
        "ports": [
            { "name": "keyward-proxy", "containerPort": settings.proxy_port },
            { "name": "keyward-admin", "containerPort": settings.admin_port },
        ],
        "volumeMounts": [
            { "name": RUN_VOLUME, "mountPath": RUN_DIR },
            { "name": CONFIG_VOLUME, "mountPath": CONFIG_DIR },
            { "name": TRUST_VOLUME, "mountPath": TRUST_DIR },
            { "name": CONTROLLER_TOKEN_VOLUME, "mountPath": CONTROLLER_TOKEN_DIR, "readOnly": true },
            { "name": VAULT_TOKEN_VOLUME, "mountPath": VAULT_TOKEN_DIR, "readOnly": true },
        ],
        // /healthz and /readyz need no admin token, so the kubelet can probe them on the pod IP.
        "startupProbe": { "httpGet": { "path": "/readyz", "port": settings.admin_port }, "periodSeconds": 1, "failureThreshold": 120 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": settings.admin_port }, "periodSeconds": 5 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": settings.admin_port }, "periodSeconds": 10 },
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    if native {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// The init container of `keyward.dev/capture: transparent`: `keyward iptables install` as root with
/// NET_ADMIN and NET_RAW and no other capability, done before any other container starts.
pub(super) fn capture_container(settings: &Settings) -> Value {
    let c = &settings.capture;
    let list = |items: &[String]| items.join(",");
    let mut args = vec![
        "iptables".to_string(),
        "install".into(),
        "--proxy-uid".into(),
        SIDECAR_UID.to_string(),
        "--proxy-port".into(),
        c.port.to_string(),
    ];
    let ports: Vec<String> = c.ports.iter().map(u16::to_string).collect();
    let exclude_ports: Vec<String> = c.exclude_ports.iter().map(u16::to_string).collect();
    for (flag, value) in [
        ("--ports", list(&ports)),
        ("--exclude-cidrs", list(&c.exclude_cidrs)),
        ("--exclude-ports", list(&exclude_ports)),
    ] {
        if !value.is_empty() {
            args.extend([flag.to_string(), value]);
        }
    }
    if c.drop_quic {
        args.push("--drop-quic".into());
    }
    json!({
        "name": CAPTURE_CONTAINER,
        "image": c.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "volumeMounts": [{ "name": CAPTURE_RUN_VOLUME, "mountPath": "/run" }],
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "32Mi" },
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    })
}

//! The injector's settings: what the webhook writes into injected pods, with their defaults and the checks
//! made when they load.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The injector's settings (a file the Helm chart renders from its values).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// The controller as sidecars reach it, e.g. `https://keyward-controller.keyward.svc:443`.
    pub controller_url: String,
    /// PEM of the CA that signed the controller's serving certificate. Public: it is written inline into the
    /// sidecar's environment (`KEYWARD_CONTROLLER_CA_PEM`), so no Secret has to exist in the pod's namespace.
    #[serde(default)]
    pub controller_ca: String,
    /// A file to read `controller_ca` from when the settings are loaded (cert-manager writes `ca.crt` next to
    /// the serving certificate), instead of giving it inline.
    #[serde(default)]
    pub controller_ca_file: Option<PathBuf>,
    /// The configuration (by name, as the controller serves it) of pods that name none in `keyward.dev/config`.
    #[serde(default = "default_config")]
    pub default_config: String,
    /// Audience of the sidecar's projected token for the controller (the controller's `--audience`).
    #[serde(default = "default_controller_audience")]
    pub controller_audience: String,
    /// Audience of the sidecar's projected token for Vault (the audience Vault's role is bound to).
    #[serde(default = "default_vault_audience")]
    pub vault_audience: String,
    /// Lifetime the kubelet requests for both tokens (it rotates them before they expire); at least 600.
    #[serde(default = "default_token_expiration")]
    pub token_expiration_seconds: u32,
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
    /// What `keyward.dev/capture: transparent` adds to a pod.
    #[serde(default)]
    pub capture: Capture,
}

/// The init container that writes the pod's iptables rules (`keyward iptables install`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// An image with `keyward` and `iptables` (deploy/Dockerfile's `capture` stage): the sidecar's image
    /// has no iptables.
    #[serde(default = "default_capture_image")]
    pub image: String,
    /// The sidecar's `transparent.listen` port (the chart's proxy configurations listen on it).
    #[serde(default = "default_transparent_port")]
    pub port: u16,
    /// Only these destination ports are captured; empty: all TCP.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Destinations never captured: the pod and service CIDRs, when in-cluster traffic should go direct.
    #[serde(default)]
    pub exclude_cidrs: Vec<String>,
    #[serde(default)]
    pub exclude_ports: Vec<u16>,
    /// Reject outbound UDP 443 so QUIC falls back to TCP, which is captured.
    #[serde(default = "default_true")]
    pub drop_quic: bool,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            image: default_capture_image(),
            port: default_transparent_port(),
            ports: Vec::new(),
            exclude_cidrs: Vec::new(),
            exclude_ports: Vec::new(),
            drop_quic: true,
        }
    }
}

fn default_capture_image() -> String {
    format!("ghcr.io/keyward/keyward-capture:{}", env!("CARGO_PKG_VERSION"))
}
fn default_transparent_port() -> u16 {
    15001
}

impl Settings {
    /// Refuses settings that would give every injected pod a sidecar that cannot start; checked when the
    /// settings are loaded, so the webhook fails at its own start instead.
    pub fn check(&self) -> Result<(), String> {
        if !self.controller_url.starts_with("https://") {
            return Err(format!(
                "controller_url must be an https:// URL, not {:?}",
                self.controller_url
            ));
        }
        if !self.controller_ca.contains("-----BEGIN CERTIFICATE-----") {
            return Err(
                "controller_ca (or controller_ca_file) must hold the PEM certificate of the CA that signed the \
                 controller's serving certificate"
                    .into(),
            );
        }
        if self.default_config.is_empty() {
            return Err("default_config must not be empty".into());
        }
        if self.token_expiration_seconds < 600 {
            return Err(format!(
                "token_expiration_seconds must be at least 600 (the Kubernetes minimum), not {}",
                self.token_expiration_seconds
            ));
        }
        Ok(())
    }
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_config() -> String {
    "default".into()
}
fn default_controller_audience() -> String {
    "keyward".into()
}
fn default_vault_audience() -> String {
    "vault".into()
}
fn default_token_expiration() -> u32 {
    3600
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
/// Loopback, in-cluster service names and the Kubernetes API (its address from the service variable the
/// kubelet sets, which Kubernetes expands in env values).
fn default_no_proxy() -> String {
    "localhost,127.0.0.1,::1,.svc,.svc.cluster.local,.cluster.local,$(KUBERNETES_SERVICE_HOST)".into()
}
fn default_cpu() -> String {
    "50m".into()
}
fn default_memory() -> String {
    "64Mi".into()
}

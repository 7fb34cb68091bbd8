//! The controller's view of the Kubernetes API, through kube-rs: token reviews, namespace enrollment, the
//! root CA Secret and the blocked-agents ConfigMap (read, updated with optimistic concurrency, and watched).
//! All of the controller's state lives here, so replicas are interchangeable and a restart loses nothing.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::issue::Identity;
use crate::killswitch::Fleet;

/// Why a sidecar's token was not accepted. The token itself is never part of it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the token was not accepted: {0}")]
    Token(String),
    #[error("namespace {0} is not enrolled (its labels do not match the controller's namespace selector)")]
    NotEnrolled(String),
    #[error("the Kubernetes API could not be asked: {0}")]
    Api(String),
}

impl Refusal {
    /// The metric label and error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Token(_) => "token_refused",
            Self::NotEnrolled(_) => "namespace_not_enrolled",
            Self::Api(_) => "kubernetes_unavailable",
        }
    }
}

#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The controller's own namespace: the CA Secret and the ConfigMaps live here.
    pub namespace: String,
}

impl Cluster {
    /// Connects as kube-rs infers: in-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(namespace: String) -> Result<Self, kube::Error> {
        let client = Client::try_default().await?;
        Ok(Self { client, namespace })
    }

    /// Asks the API server who `token` belongs to, for `audience`; only service-account tokens are accepted.
    pub async fn review(&self, token: &str, audience: &str) -> Result<Identity, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![audience.to_string()]),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal::Api(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(Refusal::Token(why));
        }
        if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
            return Err(Refusal::Token(format!("not issued for audience {audience}")));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some(("", rest)) = username.split_once("system:serviceaccount:") else {
            return Err(Refusal::Token(format!("{username} is not a service account")));
        };
        let Some((namespace, service_account)) = rest.split_once(':') else {
            return Err(Refusal::Token(format!("{username} is not a service account")));
        };
        let pod = user
            .extra
            .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name").cloned())
            .and_then(|names| names.into_iter().next());
        Ok(Identity {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod,
        })
    }

    /// Whether `namespace` carries every label of `selector`.
    pub async fn enrolled(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Result<(), Refusal> {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(namespace)
            .await
            .map_err(|e| Refusal::Api(e.to_string()))?;
        let labels = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
        if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            Ok(())
        } else {
            Err(Refusal::NotEnrolled(namespace.to_string()))
        }
    }

    /// The root CA Secret's `tls.crt`, `tls.key` and optional `ca-bundle.crt` (every root agents must trust:
    /// during a rotation, the old and the new).
    pub async fn ca(&self, name: &str) -> Result<RootFiles, String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|e| format!("Secret {}/{name}: {e}", self.namespace))?;
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .filter(|t| !t.trim().is_empty())
        };
        let missing = |key: &str| format!("Secret {}/{name} has no {key}", self.namespace);
        Ok(RootFiles {
            cert: text("tls.crt").ok_or_else(|| missing("tls.crt"))?,
            key: text("tls.key").ok_or_else(|| missing("tls.key"))?,
            bundle: text("ca-bundle.crt"),
        })
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Changes the blocked set with `change`, retrying on a conflicting write from another replica or a
    /// `kubectl edit`; creates the ConfigMap when it does not exist yet.
    pub async fn update_blocked(&self, name: &str, change: impl Fn(&mut Fleet)) -> Result<Fleet, kube::Error> {
        let api = self.config_maps();
        loop {
            let current = api.get_opt(name).await?;
            let mut fleet = current.as_ref().map(fleet_of).unwrap_or_default();
            change(&mut fleet);
            let data = data_of(&fleet);
            let result = match current {
                Some(mut cm) => {
                    cm.data = Some(data);
                    api.replace(name, &PostParams::default(), &cm).await
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            ..Default::default()
                        },
                        data: Some(data),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &cm).await
                }
            };
            match result {
                Ok(_) => return Ok(fleet),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `apply` with the blocked set now and at every change, for as long as the process runs; the
    /// watch restarts by itself after an API outage (kube-rs's watcher re-lists).
    pub async fn watch_blocked(&self, name: &str, apply: impl Fn(Fleet)) {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = std::pin::pin!(watcher(self.config_maps(), config));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => apply(fleet_of(&cm)),
                Ok(watcher::Event::Delete(_)) => apply(Fleet::default()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, configmap = name, "watching the blocked-agents ConfigMap failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Calls `apply` with every labelled proxy configuration (name → version, files) now and at every
    /// change, for as long as the process runs.
    pub async fn watch_configs(&self, label: &str, apply: impl Fn(BTreeMap<String, Served>)) {
        let config = watcher::Config::default().labels(label);
        let mut events = std::pin::pin!(watcher(self.config_maps(), config));
        let mut seen: BTreeMap<String, Served> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, Served>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(cm)) => {
                    if let (Some(list), Some((name, served))) = (listing.as_mut(), served_of(&cm)) {
                        list.insert(name, served);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    seen = listing.take().unwrap_or_default();
                    apply(seen.clone());
                }
                Ok(watcher::Event::Apply(cm)) => {
                    if let Some((name, served)) = served_of(&cm) {
                        seen.insert(name, served);
                        apply(seen.clone());
                    }
                }
                Ok(watcher::Event::Delete(cm)) => {
                    if let Some(name) = cm.metadata.name {
                        seen.remove(&name);
                        apply(seen.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, label, "watching the proxy-configuration ConfigMaps failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// A cheap call that proves the API answers (readiness).
    pub async fn reachable(&self, ca_secret: &str) -> bool {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_metadata_opt(ca_secret)
            .await
            .is_ok()
    }
}

/// One proxy configuration as served: its ConfigMap's resourceVersion and its files (`keyward.yaml` and the
/// Rego files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub version: String,
    pub files: BTreeMap<String, String>,
}

fn served_of(cm: &ConfigMap) -> Option<(String, Served)> {
    let name = cm.metadata.name.clone()?;
    let version = cm.metadata.resource_version.clone().unwrap_or_default();
    Some((
        name,
        Served {
            version,
            files: cm.data.clone().unwrap_or_default(),
        },
    ))
}

/// The root CA as stored.
pub struct RootFiles {
    pub cert: String,
    pub key: String,
    pub bundle: Option<String>,
}

/// The ConfigMap's form, meant for `kubectl edit`: `all: "true"|"false"`, `agents:` one id per line.
fn fleet_of(cm: &ConfigMap) -> Fleet {
    let data = cm.data.clone().unwrap_or_default();
    let mut agents: Vec<String> = data
        .get("agents")
        .map(|a| {
            a.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    agents.sort();
    agents.dedup();
    Fleet {
        all: data.get("all").is_some_and(|v| v.trim() == "true"),
        agents,
    }
}

fn data_of(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut agents = fleet.agents.join("\n");
    if !agents.is_empty() {
        agents.push('\n');
    }
    BTreeMap::from([
        ("all".to_string(), fleet.all.to_string()),
        ("agents".to_string(), agents),
    ])
}

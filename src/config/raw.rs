//! The YAML shape of the configuration file, exactly as users write it.
//!
//! Every struct denies unknown fields so that a typo is an error at load time instead of a silently ignored
//! setting; defaults live here so the reference in the README and the code cannot disagree.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;

use super::schema::HumanDuration;
use serde::Deserialize;

use crate::credentials::Inject;
use crate::proxy::transparent::NonHttp;
use crate::proxy::Unmatched;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin")]
    pub admin: String,
    /// A second listener for connections redirected by iptables (`keyward iptables install`).
    pub transparent: Option<RawTransparent>,
    /// Bearer token required on the admin API (except /healthz and /readyz): `{ env: NAME }` or `{ file: path }`.
    pub admin_token: Option<RawTokenAuth>,
    #[serde(default)]
    pub agent: RawAgent,
    pub ca: RawCa,
    #[serde(default)]
    pub upstream_tls: RawUpstreamTls,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub limits: RawLimits,
    /// On SIGTERM, in-flight requests get this long to finish.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub shutdown_grace: Duration,
    pub secrets: RawSecrets,
    pub policy: Option<RawPolicy>,
    /// Agent-wide, across routes.
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default)]
    pub unmatched_allow_private: bool,
    #[serde(default)]
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// `transparent: { listen, non_http }`: where redirected connections arrive, and what happens to those that
/// are neither TLS with SNI nor HTTP/1.x.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTransparent {
    #[serde(default = "default_transparent_listen")]
    pub listen: String,
    #[serde(default)]
    pub non_http: NonHttp,
}

fn default_transparent_listen() -> String {
    "127.0.0.1:15001".into()
}

/// What Keyward reports about each request besides `/metrics`: OTLP traces and the audit log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Present (or `OTEL_EXPORTER_OTLP_ENDPOINT` set) turns tracing on.
    pub traces: Option<RawTraces>,
    #[serde(default)]
    pub audit: RawAudit,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    /// Collector URL; unset falls back to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; unset falls back to `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, then `grpc`.
    pub protocol: Option<String>,
    /// Share of new traces recorded; a trace the agent started keeps the agent's sampling decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Finished spans waiting for export; past this, spans are dropped and counted rather than slowing requests.
    #[serde(default = "default_trace_queue")]
    pub max_queue: usize,
    #[serde(default = "default_trace_batch")]
    pub max_batch: usize,
    #[serde(default = "default_trace_flush", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub flush_interval: Duration,
    #[serde(default = "default_trace_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub export_timeout: Duration,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Policy, secrets and each upstream attempt as child spans; off, they are events on the request span.
    #[serde(default)]
    pub child_spans: bool,
}

impl Default for RawTraces {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: None,
            sample_ratio: default_sample_ratio(),
            max_queue: default_trace_queue(),
            max_batch: default_trace_batch(),
            flush_interval: default_trace_flush(),
            export_timeout: default_trace_timeout(),
            service_name: default_service_name(),
            child_spans: false,
        }
    }
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_trace_queue() -> usize {
    4096
}

fn default_trace_batch() -> usize {
    512
}

fn default_trace_flush() -> Duration {
    Duration::from_secs(2)
}

fn default_trace_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_service_name() -> String {
    "keyward".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `stdout`, `off`, or a file path (appended to, created if missing).
    #[serde(default = "default_audit_output")]
    pub output: String,
    /// Lines waiting for the writer; past this they are dropped and counted rather than blocking requests.
    #[serde(default = "default_audit_queue")]
    pub max_queue: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            output: default_audit_output(),
            max_queue: default_audit_queue(),
        }
    }
}

fn default_audit_output() -> String {
    "stdout".into()
}

fn default_audit_queue() -> usize {
    65536
}

fn default_listen() -> String {
    "127.0.0.1:3128".into()
}

fn default_admin() -> String {
    "127.0.0.1:9901".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub id: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Header naming the user the agent acts for; stripped before forwarding.
    #[serde(default = "default_user_header")]
    pub user_header: String,
}

impl Default for RawAgent {
    fn default() -> Self {
        Self {
            id: None,
            labels: BTreeMap::new(),
            user_header: default_user_header(),
        }
    }
}

fn default_user_header() -> String {
    "x-keyward-user".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub dir: PathBuf,
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    #[serde(default)]
    pub mode: PolicyMode,
    /// Largest JSON request body parsed into `input.request.body`, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: u64,
    /// IANA time zone for `input.time`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub poll_interval: Duration,
}

fn default_entrypoint() -> String {
    "data.keyward.decision".into()
}

fn default_body_limit() -> u64 {
    64 * 1024
}

fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default)]
    pub extra_roots: Vec<PathBuf>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "default_tls_handshake_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub agent_tls_handshake_timeout: Duration,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            agent_tls_handshake_timeout: default_tls_handshake_timeout(),
        }
    }
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

/// Protection of the listeners against slow, huge or numerous clients.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers (HTTP/1.1 buffer, HTTP/2 header list).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Concurrent HTTP/2 streams per intercepted connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    #[serde(default = "default_idle_connection_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub idle_connection_timeout: Duration,
    /// Bytes of the largest WebSocket message relayed either way.
    #[serde(default = "default_max_websocket_message")]
    pub max_websocket_message: usize,
}

fn default_max_websocket_message() -> usize {
    16 * 1024 * 1024
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_concurrent_streams: default_max_concurrent_streams(),
            idle_connection_timeout: default_idle_connection_timeout(),
            max_websocket_message: default_max_websocket_message(),
        }
    }
}

fn default_idle_connection_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_concurrent_streams() -> u32 {
    100
}

fn default_max_connections() -> usize {
    4096
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_headers() -> usize {
    100
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

fn default_tls_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    pub file: Option<PathBuf>,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub poll_interval: Duration,
    pub vault: Option<RawVault>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub address: String,
    pub namespace: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub auth: RawVaultAuth,
    #[serde(default = "default_vault_refresh", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub refresh_interval: Duration,
    #[serde(default = "default_vault_jitter", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub refresh_jitter: Duration,
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub max_stale: Duration,
    #[serde(default = "default_vault_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub request_timeout: Duration,
}

fn default_vault_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_vault_jitter() -> Duration {
    Duration::from_secs(15)
}

fn default_max_stale() -> Duration {
    Duration::from_secs(3600)
}

fn default_vault_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `auth: { token: {...} }`, `auth: { approle: {...} }` or `auth: { kubernetes: {...} }`: exactly one.
/// (A struct of options rather than an enum: serde_yaml maps enums to YAML tags, not to one-key maps.)
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAuth {
    pub token: Option<RawTokenAuth>,
    pub approle: Option<RawAppRoleAuth>,
    pub kubernetes: Option<RawKubernetesAuth>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTokenAuth {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAppRoleAuth {
    #[serde(default = "default_approle_mount")]
    pub mount: String,
    pub role_id: String,
    pub secret_id_file: PathBuf,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesAuth {
    #[serde(default = "default_kubernetes_mount")]
    pub mount: String,
    pub role: String,
    #[serde(default = "default_jwt_path")]
    pub jwt_path: PathBuf,
}

fn default_approle_mount() -> String {
    "approle".into()
}

fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}

fn default_jwt_path() -> PathBuf {
    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
}

/// `vault: { mount, path, key, version, kv }` on a credential.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVaultRef {
    #[serde(default = "default_kv_mount")]
    pub mount: String,
    pub path: String,
    pub key: String,
    pub version: Option<u64>,
    #[serde(default = "default_kv")]
    pub kv: u8,
}

/// A secret that is either a file name or a Vault key: `{ secret: name }` or `{ vault: {...} }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecretSource {
    pub secret: Option<String>,
    pub vault: Option<RawVaultRef>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub token_url: String,
    /// `client_credentials` or `refresh_token`.
    pub grant: String,
    pub client_id: RawSecretSource,
    pub client_secret: Option<RawSecretSource>,
    /// For the `refresh_token` grant: a Vault KV v2 key (rotations are written back to it).
    pub refresh_token: Option<RawVaultRef>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `basic` (default) or `body`.
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    #[serde(default = "default_refresh_before", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub refresh_before: Duration,
    #[serde(default)]
    pub allow_private: bool,
}

fn default_client_auth() -> String {
    "basic".into()
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(60)
}

fn default_kv_mount() -> String {
    "secret".into()
}

fn default_kv() -> u8 {
    2
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub allow_private: bool,
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Policy entry point for this route instead of `policy.entrypoint`.
    pub policy: Option<String>,
    pub rate_limit: Option<RawRateLimit>,
    pub concurrency: Option<RawConcurrency>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    /// mTLS: the certificate (PEM, chain first) and key presented on this route's upstream connections.
    pub client_certificate: Option<RawClientCertificate>,
}

/// `client_certificate: { cert: { secret | vault }, key: { secret | vault } }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientCertificate {
    pub cert: RawSecretSource,
    pub key: RawSecretSource,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub name: Option<String>,
    pub placeholder: String,
    /// A name in the secrets file; or use `vault` or `oauth2`.
    pub secret: Option<String>,
    pub vault: Option<RawVaultRef>,
    pub oauth2: Option<RawOAuth2>,
    pub header: Option<String>,
    pub query: Option<String>,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default)]
    pub inject: Inject,
    /// An environment variable `keyward exec` sets to the placeholder for the agent (`OPENAI_API_KEY`).
    pub env: Option<String>,
    /// HTTP Basic auth: `Authorization: Basic base64(username:password)` replaces the placeholder.
    pub basic: Option<RawBasic>,
    /// Where the agent may put the placeholder: `header` and `query` (the configured ones, the default) and,
    /// opted in, `path` (`/bot<token>/` APIs) and `body` (Slack's form `token=`, JSON-RPC APIs).
    pub locations: Option<Vec<RawLocation>>,
    /// AWS SigV4 re-signing: the placeholder is the access key id the agent signs with.
    pub aws_sigv4: Option<RawSigV4>,
    /// A Google service-account key exchanged for access tokens (RFC 7523); written as a Bearer token.
    pub google_service_account: Option<RawGoogleServiceAccount>,
}

/// `google_service_account: { key: { secret | vault }, scopes: [...] }`: the key is the JSON key file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGoogleServiceAccount {
    pub key: RawSecretSource,
    pub scopes: Vec<String>,
    #[serde(default = "default_refresh_before", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub refresh_before: Duration,
    /// Let the key's token_uri resolve to private addresses (tests; in-cluster token services).
    #[serde(default)]
    pub allow_private: bool,
}

/// `aws_sigv4: { access_key_id, secret_access_key, session_token }`, each `{ secret | vault }`; or
/// `aws_sigv4: { vault_aws: { mount, role } }` for dynamic credentials.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    pub access_key_id: Option<RawSecretSource>,
    pub secret_access_key: Option<RawSecretSource>,
    pub session_token: Option<RawSecretSource>,
    pub vault_aws: Option<RawVaultAws>,
}

/// A role of Vault's AWS secrets engine: `<mount>/creds/<role>`, or `<mount>/sts/<role>` with `sts: true`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAws {
    #[serde(default = "default_aws_mount")]
    pub mount: String,
    pub role: String,
    #[serde(default)]
    pub sts: bool,
}

fn default_aws_mount() -> String {
    "aws".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawLocation {
    Header,
    Query,
    Path,
    /// JSON and form bodies held in memory (up to 8 MiB).
    Body,
}

/// `basic: { username: "bot@example.com" | { secret | vault }, password: { secret | vault } }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    pub username: RawUsername,
    pub password: RawSecretSource,
}

/// A username written in the config, or read like a secret.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawUsername {
    Literal(String),
    Secret(RawSecretSource),
}

fn default_format() -> String {
    "{secret}".into()
}

/// `{ per_minute: 600, burst: 60 }`: exactly one of per_second / per_minute / per_hour.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    /// Requests allowed at once before the rate applies; defaults to the rate itself.
    pub burst: Option<u32>,
    /// One bucket per user the agent acts for (`agent.user_header`) instead of one for the agent.
    #[serde(default)]
    pub per_user: bool,
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    10_000
}

/// At most `max_in_flight` requests of the route at once; others wait up to `queue_timeout`, then get 503.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    pub max_in_flight: u32,
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub queue_timeout: Duration,
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Per-route upstream time limits; unset ones do not apply (connect falls back to `upstream.connect_timeout`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<HumanDuration>")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<HumanDuration>")]
    pub tls: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<HumanDuration>")]
    pub response_headers: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<HumanDuration>")]
    pub idle: Option<Duration>,
}

/// Retries of transient upstream failures.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    #[serde(default = "default_base_delay", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub base_delay: Duration,
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub max_delay: Duration,
    /// No new attempt starts after this much time since the first.
    #[serde(default = "default_retry_deadline", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub deadline: Duration,
    /// Largest request body kept in memory to be replayed.
    #[serde(default = "default_max_replay")]
    pub max_body: u64,
    /// An upstream 429 is retried only when its Retry-After is at most this.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    #[schemars(with = "HumanDuration")]
    pub max_retry_after: Duration,
}

fn default_base_delay() -> Duration {
    Duration::from_millis(100)
}

fn default_max_delay() -> Duration {
    Duration::from_secs(2)
}

fn default_retry_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_max_replay() -> u64 {
    64 * 1024
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(5)
}

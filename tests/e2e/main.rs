//! End-to-end tests: the real `keyward` binary, real clients, real TLS, 127.0.0.1 only.

mod support;

mod admin;
mod agents;
mod aws;
mod basic;
mod cli;
mod config_errors;
mod controller;
mod doctor;
mod exec;
mod faults;
mod google;
mod grpc;
mod hardening;
mod hostile;
mod kubernetes;
mod mtls;
mod oauth2;
mod observability;
mod paths;
mod policy;
mod reliability;
mod reload;
mod routing;
mod runtimes;
mod scrubbing;
mod secrets_rotation;
mod security;
mod streaming;
mod vault;
mod websocket;

/// Routes shared by most tests. `:*` admits the echo server's random port (a bare host is port 443 only).
pub fn routes() -> &'static str {
    r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: echo
    hosts: ["localhost:*"]
    allow_private: true
    credentials:
      - placeholder: kw-placeholder-openai
        secret: openai_key
        header: Authorization
        format: "Bearer {secret}"
      - name: org
        placeholder: kw-org-placeholder
        secret: org_id
        header: OpenAI-Organization
        inject: always
      - placeholder: kw-placeholder-maps
        secret: maps_key
        query: key
  - name: github
    hosts: ["api.keyward.test:*"]
    paths: ["/repos"]
    methods: [GET]
    allow_private: true
    credentials:
      - placeholder: kw-placeholder-github
        secret: github_token
        header: Authorization
        format: "token {secret}"
"#
}

//! One policy decision, the per-request cost of the policy stage: building the input document and
//! evaluating the compiled sales policy (the issue-9 target is p50 ≤ 10 µs).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::policy::input::{self, Agent, Body, Context, Request};
use keyward::policy::{Mode, Policies, Settings, DEFAULT_ENTRYPOINT};

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/sales");
    let policies = Policies::load(Settings {
        dir,
        entrypoints: vec![DEFAULT_ENTRYPOINT.into()],
        mode: Mode::Enforce,
    })
    .unwrap();
    let agent = Agent {
        id: "sales-bot".into(),
        labels: BTreeMap::from([("team".into(), "sales".into())]),
    };
    let parts = http::Request::builder()
        .method("POST")
        .uri("/services/data/v60.0/sobjects/Opportunity?from=agent")
        .header("authorization", "Bearer kw-placeholder-salesforce")
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let body = serde_json::json!({"Name": "Acme demo", "Amount": 25000, "Industry": "Technology"});
    let has_placeholder = |b: &[u8]| b.windows(14).any(|w| w == b"kw-placeholder");
    let credentials = vec!["salesforce_token".to_string()];
    let build = || {
        let ctx = Context {
            agent: &agent,
            user: Some("alice"),
            route: Some("salesforce"),
            credentials: &credentials,
            now: chrono::Utc::now().with_timezone(&chrono_tz::UTC),
            has_placeholder: &has_placeholder,
        };
        let req = Request {
            scheme: "https",
            host: "acme.my.salesforce.com",
            port: 443,
            parts: &parts,
            body: Body::Json(body.clone()),
        };
        regorus::Value::from(input::build(&ctx, req))
    };
    let doc = build();
    assert!(policies.decide(DEFAULT_ENTRYPOINT, doc.clone()).allow);
    c.bench_function("policy/decide (compiled sales policy)", |b| {
        b.iter(|| black_box(policies.decide(DEFAULT_ENTRYPOINT, black_box(doc.clone()))))
    });
    c.bench_function("policy/input+decide", |b| {
        b.iter(|| black_box(policies.decide(DEFAULT_ENTRYPOINT, build())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! One policy decision, the per-request cost of the policy stage: building the input document, and evaluating
//! shipped policies on the VM against the interpreter reference (the issue-9 target is p50 ≤ 10 µs).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::policy::input::{self, Agent, Body, Context, Request};
use keyward::policy::{Mode, Policies, Settings, DEFAULT_ENTRYPOINT};

fn load(name: &str) -> Policies {
    Policies::load(Settings {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name),
        entrypoints: vec![DEFAULT_ENTRYPOINT.into()],
        mode: Mode::Enforce,
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
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
            body: Body::Json {
                value: body.clone(),
                size: 70,
            },
        };
        regorus::Value::from(input::build(&ctx, req))
    };
    let doc = build();
    c.bench_function("policy/input document", |b| b.iter(|| black_box(build())));

    // The shipped policies on the VM: sales calls regex.match once, readonly is a method check, github calls
    // regex.match on a path it builds with concat.
    for name in ["sales", "readonly", "github"] {
        let policies = load(name);
        let decision = policies.decide(DEFAULT_ENTRYPOINT, doc.clone());
        assert!(!decision.error, "{name}: {decision:?}");
        c.bench_function(&format!("policy/decide {name}"), |b| {
            b.iter(|| black_box(policies.decide(DEFAULT_ENTRYPOINT, black_box(doc.clone()))))
        });
    }

    // The reference: regorus' interpreter on the same compiled sales policy (what decisions ran on before).
    let mut engine = regorus::Engine::new();
    engine
        .add_policy_from_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/sales/keyward.rego"))
        .unwrap();
    let compiled = engine
        .compile_with_entrypoint(&regorus::Rc::from(DEFAULT_ENTRYPOINT))
        .unwrap();
    assert!(load("sales").decide(DEFAULT_ENTRYPOINT, doc.clone()).allow);
    c.bench_function("policy/interpreter sales", |b| {
        b.iter(|| black_box(compiled.eval_with_input(black_box(doc.clone())).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

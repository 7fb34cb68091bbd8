//! The per-request pieces besides the policy (see `policy.rs`): placeholder swap, response scrubbing, and leaf
//! certificates (a mint for a new host, and the cache hit every later CONNECT to that host takes).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::config::Config;
use keyward::credentials::Credentials;
use std::sync::Arc;

use keyward::scrub::{Scrubber, Stream};
use keyward::secrets::file::FileStore;
use keyward::tls::ca::Ca;
use keyward::tls::leaf::LeafCache;

const CONFIG: &str = r#"
ca: { cert: ca/ca.crt, key: ca/ca.key }
secrets: { file: secrets.yaml }
routes:
  - name: openai
    hosts: ["api.openai.com"]
    credentials:
      - placeholder: kw-placeholder-openai
        secret: openai_key
        header: Authorization
        format: "Bearer {secret}"
      - placeholder: kw-placeholder-maps
        secret: maps_key
        query: key
"#;

fn swap(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keyward.yaml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai_key: sk-bench-0123456789abcdef\nmaps_key: maps-bench-0123456789\n",
    )
    .unwrap();
    let config = Config::load(&dir.path().join("keyward.yaml")).unwrap();
    let store = FileStore::load(&dir.path().join("secrets.yaml")).unwrap();
    let Config {
        routes, credentials, ..
    } = config;
    let credentials = Credentials::new(credentials);
    let route = &routes[0];
    let request = |uri: &str| {
        http::Request::builder()
            .uri(uri)
            .header("authorization", "Bearer kw-placeholder-openai")
            .header("content-type", "application/json")
            .header("user-agent", "agent/1.0")
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    for (name, parts) in [
        ("swap: header", request("https://api.openai.com/v1/chat/completions")),
        (
            "swap: header + query",
            request("https://api.openai.com/v1/maps?key=kw-placeholder-maps&q=x"),
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut parts = parts.clone();
                let plan = credentials.plan(Some(route), false, &parts).unwrap();
                credentials.write(&plan, &mut parts, &store).unwrap();
                black_box(parts)
            })
        });
    }
}

fn scrub(c: &mut Criterion) {
    let pair = |secret: &str, placeholder: &str| (secret.as_bytes().to_vec(), Arc::from(placeholder.as_bytes()));
    let scrubber = Arc::new(
        Scrubber::new([
            pair("sk-bench-0123456789abcdef", "kw-placeholder-openai"),
            pair("maps-bench-0123456789", "kw-placeholder-maps"),
        ])
        .unwrap(),
    );
    let clean: Vec<u8> = br#"{"id":"chatcmpl-1","choices":[{"message":{"content":"hello world"}}]}"#
        .iter()
        .copied()
        .cycle()
        .take(16 * 1024)
        .collect();
    let mut dirty = clean.clone();
    dirty[8000..8025].copy_from_slice(b"sk-bench-0123456789abcdef");
    let mut group = c.benchmark_group("scrub 16 KiB chunk");
    group.throughput(criterion::Throughput::Bytes(clean.len() as u64));
    group.bench_function("no secret", |b| {
        let mut stream = Stream::new(scrubber.clone());
        b.iter(|| black_box(stream.push(black_box(&clean))))
    });
    group.bench_function("one secret", |b| {
        let mut stream = Stream::new(scrubber.clone());
        b.iter(|| black_box(stream.push(black_box(&dirty))))
    });
    group.finish();
}

fn leaves(c: &mut Criterion) {
    keyward::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Ca::load_or_create(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
    let cache = LeafCache::new(ca, Default::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(cache.server_config("api.openai.com")).unwrap();
    c.bench_function("leaf: cache hit", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.server_config(black_box("api.openai.com")))
                .unwrap()
        })
    });
    let next = AtomicUsize::new(0);
    c.bench_function("leaf: mint (new host)", |b| {
        b.iter(|| {
            let host = format!("h{}.example.com", next.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(cache.server_config(&host)).unwrap()
        })
    });
}

criterion_group!(benches, swap, scrub, leaves);
criterion_main!(benches);

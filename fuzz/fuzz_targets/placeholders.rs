//! Placeholder planning and writing on arbitrary header values and query strings: never a panic, and a plan
//! that succeeds leaves no placeholder behind in what it rewrote.
#![no_main]

use keyward::config::Config;
use keyward::credentials::Credentials;
use keyward::secrets::{Secret, SecretError, SecretRef, SecretStore};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = "ca: {cert: c, key: k}\nsecrets: {file: s}\nroutes:\n  - name: a\n    hosts: [a.test]\n    credentials:\n      - placeholder: kw-placeholder-a\n        secret: sa\n        header: authorization\n        format: 'Bearer {secret}'\n      - placeholder: kw-placeholder-q\n        secret: sq\n        query: key\n        inject: always\n";

struct Fixed;
impl SecretStore for Fixed {
    fn get(&self, _: &SecretRef) -> Result<Secret, SecretError> {
        Ok(Secret::new("real-secret-value"))
    }
    fn not_ready(&self) -> Option<String> {
        None
    }
    fn generation(&self) -> u64 {
        0
    }
}

fn setup() -> &'static (Credentials, keyward::route::Route) {
    static SETUP: OnceLock<(Credentials, keyward::route::Route)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut config = Config::parse(std::path::Path::new("fuzz.yaml"), CONFIG.to_string()).unwrap();
        let route = config.routes.remove(0);
        (Credentials::new(std::mem::take(&mut config.credentials)), route)
    })
}

fuzz_target!(|input: (String, String)| {
    let (header, query) = input;
    let (credentials, route) = setup();
    let Ok(uri) = format!("https://a.test/p?{query}").parse::<http::Uri>() else {
        return;
    };
    let Ok(value) = http::HeaderValue::from_str(&header) else {
        return;
    };
    let mut parts = http::Request::builder()
        .uri(uri)
        .header("x-h", value)
        .body(())
        .unwrap()
        .into_parts()
        .0;
    if let Ok(plan) = credentials.plan(Some(route), false, &parts) {
        if credentials.write(&plan, &mut parts, &Fixed).is_ok() {
            let header = parts
                .headers
                .get("x-h")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            assert!(
                !credentials.has_placeholder(&header),
                "a placeholder survived in a header"
            );
        }
    }
});

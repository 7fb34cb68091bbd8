//! Bad configuration is refused by both `check` and `run`, naming the file, line and field; every example
//! configuration shipped in the repository is valid.

use std::process::Command;

use crate::support::proxy::{binary, config_yaml, workdir};

/// Runs `keyward <cmd> --config F` and returns (success, stderr).
fn keyward(cmd: &str, config: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .args([cmd, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `check` and `run` both fail and both mention every expected fragment.
fn assert_refused(yaml: &str, expected: &[&str]) {
    let dir = workdir(yaml);
    let config = dir.path().join("keyward.yaml");
    for cmd in ["check", "run"] {
        let (ok, stderr) = keyward(cmd, &config);
        assert!(!ok, "`{cmd}` accepted a bad config");
        for fragment in expected {
            assert!(
                stderr.contains(fragment),
                "`{cmd}` stderr lacks {fragment:?}:\n{stderr}"
            );
        }
    }
    assert!(!dir.path().join("ca").exists(), "a refused config creates nothing");
}

#[test]
fn unknown_key_names_file_line_and_field() {
    let yaml = config_yaml("routes:\n  - name: a\n    hosts: [a.example]\n    bogus: 1\n");
    let line = yaml.lines().position(|l| l.contains("bogus")).unwrap() + 1;
    assert_refused(
        &yaml,
        &[&format!("keyward.yaml:{line}:"), "routes[0]", "unknown field `bogus`"],
    );
}

#[test]
fn missing_secret_names_the_credential_field() {
    let yaml = config_yaml(
        "routes:\n  - name: a\n    hosts: [a.example]\n    credentials:\n      - placeholder: kw-placeholder-x\n        secret: no_such_secret\n",
    );
    let line = yaml.lines().position(|l| l.contains("no_such_secret")).unwrap() + 1;
    assert_refused(
        &yaml,
        &[
            &format!("keyward.yaml:{line}:"),
            "routes[0].credentials[0].secret",
            "no secret named `no_such_secret`",
        ],
    );
}

#[test]
fn invalid_values_name_their_field() {
    let cases = [
        ("routes:\n  - name: a\n    hosts: [\"a.*.example\"]\n", "routes[0].hosts[0]"),
        ("routes:\n  - name: a\n    hosts: [a.example]\n    methods: [\"G T\"]\n", "routes[0].methods[0]"),
        ("routes:\n  - name: a\n    hosts: [a.example]\n    credentials:\n      - placeholder: kw-placeholder-x\n        secret: openai_key\n        format: Bearer\n", "routes[0].credentials[0].format"),
        ("routes:\n  - name: a\n    hosts: [a.example]\n  - name: a\n    hosts: [b.example]\n", "routes[1].name"),
    ];
    for (extra, field) in cases {
        assert_refused(&config_yaml(extra), &[field]);
    }
}

#[test]
fn broken_yaml_names_file_and_line() {
    let yaml = config_yaml("routes:\n  - name: a\n   hosts: [oops\n");
    assert_refused(&yaml, &["keyward.yaml:"]);
    let (ok, stderr) = keyward("check", std::path::Path::new("/nonexistent/keyward.yaml"));
    assert!(!ok && stderr.contains("/nonexistent/keyward.yaml"), "{stderr}");
}

#[test]
fn every_example_config_in_the_repository_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["examples", "deploy"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("keyward") && name.ends_with(".yaml") {
                let (ok, stderr) = keyward("check", &path);
                assert!(ok, "{}: {stderr}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no example configs found");
}

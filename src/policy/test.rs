//! `keyward policy test`: runs the `test_*` rules of a policy directory's `*_test.rego` files, OPA-style, so
//! policy authors (and CI) check policies with the same engine that enforces them.

use std::path::Path;

use regorus::Value;

use super::load::{engine, policy_files};
use super::PolicyError;

/// One test rule and whether it held.
pub struct Outcome {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

pub fn run(dir: &Path) -> Result<Vec<Outcome>, PolicyError> {
    let (mut engine, _) = engine(dir, true)?;
    let mut outcomes = Vec::new();
    for file in policy_files(dir, true)?
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_test.rego"))
    {
        let text = std::fs::read_to_string(file).map_err(|e| PolicyError::Load {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .unwrap_or("")
            .trim()
            .to_string();
        let mut names: Vec<&str> = text.lines().filter_map(test_rule_name).collect();
        names.dedup();
        for name in names {
            let rule = format!("data.{package}.{name}");
            let (passed, detail) = match engine.eval_rule(rule.clone()) {
                Ok(Value::Bool(true)) => (true, String::new()),
                Ok(Value::Undefined) => (false, "undefined (a condition did not hold)".into()),
                Ok(other) => (false, format!("evaluated to {other}")),
                Err(e) => (false, format!("error: {e}")),
            };
            outcomes.push(Outcome {
                name: rule,
                passed,
                detail,
            });
        }
    }
    Ok(outcomes)
}

/// `test_name if ...` or `test_name := ...` at the start of a line.
fn test_rule_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    let name = &line[..end];
    name.starts_with("test_").then_some(name)
}

//! Reads a policy directory (`*.rego` policies, `*.json`/`*.yaml` data; `*_test.rego` only for `policy test`)
//! and compiles one `CompiledPolicy` per entry point.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use regorus::{CompiledPolicy, Engine, Rc, Value};

use super::eval::Evaluator;
use super::{PolicyError, DEFAULT_ENTRYPOINT, FALLBACK_ENTRYPOINT};

pub struct PolicySet {
    compiled: HashMap<String, Evaluator>,
    fingerprint: u64,
}

impl PolicySet {
    pub fn load(dir: &Path, entrypoints: &[String]) -> Result<Self, PolicyError> {
        let (mut engine, fingerprint) = engine(dir, false)?;
        let mut compiled = HashMap::new();
        for entrypoint in entrypoints {
            let (policy, rule) = compile(&mut engine, entrypoint, dir)?;
            compiled.insert(entrypoint.clone(), Evaluator::new(policy, rule, engine.get_data()));
        }
        Ok(Self { compiled, fingerprint })
    }

    pub fn eval(&self, entrypoint: &str, input: Value) -> anyhow::Result<Value> {
        let policy = self
            .compiled
            .get(entrypoint)
            .ok_or_else(|| anyhow::anyhow!("entry point `{entrypoint}` was not compiled"))?;
        policy.eval(input)
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// An engine holding every policy and data file of `dir` (and the `*_test.rego` files when asked), with a
/// fingerprint of their contents.
pub fn engine(dir: &Path, with_tests: bool) -> Result<(Engine, u64), PolicyError> {
    let files = policy_files(dir, with_tests)?;
    let mut engine = Engine::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| load_err(path, &e.to_string()))?;
        text.hash(&mut hasher);
        match path.extension().and_then(|e| e.to_str()) {
            Some("rego") => {
                engine
                    .add_policy(path.display().to_string(), text)
                    .map_err(|e| PolicyError::Compile(e.to_string()))?;
            }
            Some("json") => {
                let value = Value::from_json_str(&text).map_err(|e| load_err(path, &e.to_string()))?;
                engine.add_data(value).map_err(|e| load_err(path, &e.to_string()))?;
            }
            _ => {
                let json: serde_json::Value = crate::yaml::parse(&text)
                    .map_err(|e| load_err(path, &format!("line {}: {}", e.line, e.message)))?;
                engine
                    .add_data(Value::from(json))
                    .map_err(|e| load_err(path, &e.to_string()))?;
            }
        }
    }
    Ok((engine, hasher.finish()))
}

/// The policy compiled for `entrypoint` and the rule it evaluates: the default entry point falls back to the bare
/// boolean `data.keyward.allow`.
fn compile<'a>(engine: &mut Engine, entrypoint: &'a str, dir: &Path) -> Result<(CompiledPolicy, &'a str), PolicyError> {
    let attempt =
        |engine: &mut Engine, rule: &'a str| engine.compile_with_entrypoint(&Rc::from(rule)).map(|p| (p, rule));
    match attempt(engine, entrypoint) {
        Ok(compiled) => Ok(compiled),
        Err(_) if entrypoint == DEFAULT_ENTRYPOINT => {
            attempt(engine, FALLBACK_ENTRYPOINT).map_err(|_| no_entry(entrypoint, dir))
        }
        Err(_) => Err(no_entry(entrypoint, dir)),
    }
}

fn no_entry(entrypoint: &str, dir: &Path) -> PolicyError {
    PolicyError::NoEntrypoint {
        entrypoint: entrypoint.into(),
        dir: dir.display().to_string(),
    }
}

fn load_err(path: &Path, message: &str) -> PolicyError {
    PolicyError::Load {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Sorted, so that load order (and therefore data merge order and the fingerprint) is stable.
pub fn policy_files(dir: &Path, with_tests: bool) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| load_err(dir, &e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let wanted = [".rego", ".json", ".yaml", ".yml"]
                .iter()
                .any(|ext| name.ends_with(ext));
            wanted && (with_tests || !name.ends_with("_test.rego")) && p.is_file()
        })
        .collect();
    files.sort();
    if !files.iter().any(|p| p.extension().is_some_and(|e| e == "rego")) {
        return Err(load_err(dir, "no .rego files"));
    }
    Ok(files)
}

/// A cheap change detector for polling: names, sizes and modification times of the directory's files.
pub fn dir_fingerprint(dir: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut seen: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name(), e.metadata().ok()?)))
            .map(|(name, m)| (name, m.len(), m.modified().ok()))
            .collect();
        seen.sort();
        seen.hash(&mut hasher);
    }
    hasher.finish()
}

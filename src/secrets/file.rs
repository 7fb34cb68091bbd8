//! The embedded default store: a YAML file mapping secret names to values, re-read when it changes.
//!
//! Re-reading is by polling the file's contents rather than filesystem events, because Kubernetes Secret and
//! ConfigMap volumes update through symlink swaps that inotify watchers routinely miss. A file that stops
//! parsing keeps the last good values in service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{Secret, SecretError, SecretRef, SecretStore};

/// Why the secrets file could not be loaded. The parser's own message is never shown: it can quote the value
/// it choked on, and that value may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("{path}: cannot read secrets file: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: invalid secrets file: expected a map of secret name to string value")]
    Parse { path: String, line: usize, column: usize },
    #[error("{path}: secret `{name}` is missing, and the configuration uses it")]
    Missing { path: String, name: String },
    #[error("{path}: secret `{name}`: {message}")]
    TooLong {
        path: String,
        name: String,
        message: String,
    },
}

pub struct FileStore {
    path: PathBuf,
    values: ArcSwap<HashMap<String, Secret>>,
    last_text: std::sync::Mutex<String>,
    /// Names the configuration uses. A new version of the file without one of them is refused: it is far more
    /// likely a half-written file or a mistake than an intent to break those credentials.
    required: Vec<String>,
    generation: super::Generation,
}

impl FileStore {
    pub fn load(path: &Path) -> Result<Self, FileStoreError> {
        let text = read(path)?;
        let values = parse(path, &text, &[])?;
        Ok(Self {
            path: path.to_path_buf(),
            values: ArcSwap::from_pointee(values),
            last_text: std::sync::Mutex::new(text),
            required: Vec::new(),
            generation: Default::default(),
        })
    }

    /// From now on, a new version of the file must contain every one of `names` to be accepted.
    pub fn require(&mut self, names: Vec<String>) {
        self.required = names;
    }

    /// Re-reads the file; returns whether the values changed. On error the previous values stay in service.
    pub fn refresh(&self) -> Result<bool, FileStoreError> {
        let text = read(&self.path)?;
        let mut last = self.last_text.lock().unwrap_or_else(|e| e.into_inner());
        if *last == text {
            return Ok(false);
        }
        let values = parse(&self.path, &text, &self.required)?;
        self.values.store(Arc::new(values));
        self.generation.bump();
        *last = text;
        Ok(true)
    }

    /// Polls the file until the task is dropped, logging (never the values) when it changes or breaks.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.refresh()).await {
                Ok(Ok(true)) => {
                    tracing::info!(path = %self.path.display(), "secrets file reloaded")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "secrets file not reloaded; previous values stay in use")
                }
                Err(e) => tracing::error!(error = %e, "secrets file reload task failed"),
            }
        }
    }
}

impl FileStore {
    /// Whether the file has this name, for configuration checks at load time.
    pub fn contains(&self, name: &str) -> bool {
        self.values.load().contains_key(name)
    }
}

impl SecretStore for FileStore {
    fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        let SecretRef::File(name) = secret else {
            return Err(SecretError::Missing(secret.to_string()));
        };
        self.values
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Missing(name.clone()))
    }

    fn not_ready(&self) -> Option<String> {
        None
    }
}

fn read(path: &Path) -> Result<String, FileStoreError> {
    std::fs::read_to_string(path).map_err(|source| FileStoreError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse(path: &Path, text: &str, required: &[String]) -> Result<HashMap<String, Secret>, FileStoreError> {
    let map: HashMap<String, String> = if text.trim().is_empty() {
        HashMap::new()
    } else {
        crate::yaml::parse(text).map_err(|e| FileStoreError::Parse {
            path: path.display().to_string(),
            line: e.line,
            column: e.column,
        })?
    };
    if let Some(name) = required.iter().find(|n| !map.contains_key(*n)) {
        return Err(FileStoreError::Missing {
            path: path.display().to_string(),
            name: name.clone(),
        });
    }
    for (name, value) in &map {
        super::check_length(value).map_err(|message| FileStoreError::TooLong {
            path: path.display().to_string(),
            name: name.clone(),
            message,
        })?;
    }
    Ok(map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> SecretRef {
        SecretRef::File("k".into())
    }

    #[test]
    fn parse_error_does_not_quote_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "a: ok\nb: [not-a-string-sk-9999]\n").unwrap();
        let err = FileStore::load(&path).err().unwrap().to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(!err.contains("sk-9999"), "{err}");
    }

    #[test]
    fn refresh_swaps_values_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "k: one\n").unwrap();
        let mut store = FileStore::load(&path).unwrap();
        store.require(vec!["k".into()]);
        assert!(!store.refresh().unwrap());
        std::fs::write(&path, "k: two\n").unwrap();
        assert!(store.refresh().unwrap());
        assert_eq!(store.get(&k()).unwrap().expose(), "two");
        for broken in ["k: [broken\n", "", "other: x\n"] {
            std::fs::write(&path, broken).unwrap();
            assert!(store.refresh().is_err(), "{broken:?} refused");
            assert_eq!(store.get(&k()).unwrap().expose(), "two");
        }
        assert!(matches!(
            store.get(&SecretRef::File("nope".into())),
            Err(SecretError::Missing(_))
        ));
    }
}

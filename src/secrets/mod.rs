//! Real secret values and the stores that hold them.
//!
//! A store answers lookups from memory only: backends load and refresh in the background, so a proxied request
//! never waits on a file read or a network call to get its secret.

pub mod file;

use std::fmt;
use std::sync::Arc;

/// A real secret. `Debug` and `Display` print `***` so that a secret passed to a log macro, an error or a panic
/// message by mistake still does not leak; the value is reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The real value. Call it only where the value is written into an outbound request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be produced. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{0}` is not in the secrets store")]
    Missing(String),
}

/// Where credentials get their real values from.
pub trait SecretStore: Send + Sync {
    /// The current value of the named secret, from memory.
    fn get(&self, name: &str) -> Result<Secret, SecretError>;

    /// Whether the named secret exists, for configuration checks at load time.
    fn contains(&self, name: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("sk-real-value");
        assert_eq!(format!("{s} {s:?} {:?}", Some(s.clone())), "*** *** Some(***)");
        assert_eq!(s.expose(), "sk-real-value");
    }
}

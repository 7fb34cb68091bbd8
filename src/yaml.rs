//! The one place YAML is parsed (serde_yaml is unmaintained upstream; a fork can replace it here alone).

use serde::de::DeserializeOwned;

/// A YAML error reduced to its position and, only when the caller allows it, the parser's message (which
/// can quote the offending value).
#[derive(Debug)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        YamlError { line, column, message }
    })
}

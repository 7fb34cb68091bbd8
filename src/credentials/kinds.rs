//! The closed set of credential kinds. Each kind has an early part, run where placeholders are swapped, and a
//! late part, run on the request as it leaves Keyward (where a signing kind signs over the final headers).
//! A new kind is one variant here and its two parts; the compiler then names every place that must handle it.

use http::header::HeaderName;

use super::SwapError;
use crate::secrets::{Secret, SecretRef};

#[derive(Debug, Clone)]
pub enum Kind {
    /// One secret written, in `format`, into the configured header or query value.
    Swap(Swap),
}

#[derive(Debug, Clone)]
pub struct Swap {
    pub secret: SecretRef,
    pub header: Option<HeaderName>,
    pub query: Option<String>,
    pub format: Format,
    pub inject: Inject,
}

impl Kind {
    /// Every secret the credential reads.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        match self {
            Self::Swap(swap) => std::iter::once(&swap.secret),
        }
    }

    /// The header whose value carries the placeholder (and takes the credential).
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            Self::Swap(swap) => swap.header.as_ref(),
        }
    }

    /// The query key whose value carries the placeholder.
    pub fn query(&self) -> Option<&str> {
        match self {
            Self::Swap(swap) => swap.query.as_deref(),
        }
    }

    pub fn inject(&self) -> Inject {
        match self {
            Self::Swap(swap) => swap.inject,
        }
    }

    /// The late part, on the final request.
    pub fn late(&self, _parts: &mut http::request::Parts) -> Result<(), SwapError> {
        match self {
            Self::Swap(_) => Ok(()),
        }
    }
}

/// When a credential is written into a request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inject {
    /// Only where the agent sent the placeholder.
    #[default]
    OnPlaceholder,
    /// Also when the agent sent nothing: the configured header (or query parameter) is added.
    Always,
}

/// A credential's `format`, split once at load time around its single `{secret}`.
#[derive(Debug, Clone)]
pub struct Format {
    prefix: String,
    suffix: String,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once("{secret}") {
            Some((prefix, suffix)) if !suffix.contains("{secret}") => Ok(Self {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
            Some(_) => Err("`{secret}` may appear only once".into()),
            None => Err("must contain `{secret}`".into()),
        }
    }

    pub(super) fn render(&self, secret: &Secret) -> String {
        [self.prefix.as_str(), secret.expose(), self.suffix.as_str()].concat()
    }
}

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
    /// `Authorization: Basic base64(username:password)`, where the agent sent the placeholder in a Basic
    /// (as the password, or anywhere in the pair) or Bearer `Authorization` header.
    Basic(Basic),
    /// AWS SigV4: the placeholder is the access key id the agent signs with; the late part signs again.
    SigV4(super::sigv4::SigV4),
}

#[derive(Debug, Clone)]
pub struct Basic {
    pub username: Username,
    pub password: SecretRef,
    pub inject: Inject,
}

/// A Basic username: in the config, or read like a secret.
#[derive(Debug, Clone)]
pub enum Username {
    Literal(String),
    Secret(SecretRef),
}

#[derive(Debug, Clone)]
pub struct Swap {
    pub secret: SecretRef,
    pub header: Option<HeaderName>,
    pub query: Option<String>,
    /// The placeholder may also stand in the path (percent-decoded to match, re-encoded when written).
    pub path: bool,
    /// The placeholder may also stand in a JSON or form body held in memory.
    pub body: bool,
    pub format: Format,
    pub inject: Inject,
}

impl Kind {
    /// Every secret the credential reads.
    pub fn secrets(&self) -> Box<dyn Iterator<Item = &SecretRef> + '_> {
        match self {
            Self::Swap(swap) => Box::new(std::iter::once(&swap.secret)),
            Self::Basic(basic) => Box::new(std::iter::once(&basic.password).chain(match &basic.username {
                Username::Secret(r) => Some(r),
                Username::Literal(_) => None,
            })),
            Self::SigV4(sigv4) => Box::new(sigv4.secrets()),
        }
    }

    /// Whether the kind writes nothing where the placeholder was and signs the request late instead.
    pub fn signs(&self) -> bool {
        matches!(self, Self::SigV4(_))
    }

    /// The header whose value carries the placeholder (and takes the credential).
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            Self::Swap(swap) => swap.header.as_ref(),
            Self::Basic(_) | Self::SigV4(_) => Some(&http::header::AUTHORIZATION),
        }
    }

    /// The query key whose value carries the placeholder.
    pub fn query(&self) -> Option<&str> {
        match self {
            Self::Swap(swap) => swap.query.as_deref(),
            Self::Basic(_) => None,
            // A presigned URL carries the key id here.
            Self::SigV4(_) => Some("X-Amz-Credential"),
        }
    }

    /// Whether the placeholder may stand in the path.
    pub fn in_path(&self) -> bool {
        match self {
            Self::Swap(swap) => swap.path,
            Self::Basic(_) | Self::SigV4(_) => false,
        }
    }

    /// Whether the placeholder may stand in a request body.
    pub fn in_body(&self) -> bool {
        match self {
            Self::Swap(swap) => swap.body,
            Self::Basic(_) | Self::SigV4(_) => false,
        }
    }

    pub fn inject(&self) -> Inject {
        match self {
            Self::Swap(swap) => swap.inject,
            Self::Basic(basic) => basic.inject,
            Self::SigV4(_) => Inject::OnPlaceholder,
        }
    }

    /// The early part: the header value to write from the values `read` returns for this kind's secrets, and
    /// every value written that a response must be scrubbed of. Never called for a kind that [`signs`].
    ///
    /// [`signs`]: Self::signs
    pub fn render(
        &self,
        read: impl Fn(&SecretRef) -> Result<Secret, SwapError>,
    ) -> Result<(String, Vec<Secret>), SwapError> {
        match self {
            Self::Swap(swap) => {
                let secret = read(&swap.secret)?;
                Ok((swap.format.render(&secret), vec![secret]))
            }
            Self::Basic(basic) => {
                use base64::Engine as _;
                let password = read(&basic.password)?;
                let mut written = vec![];
                let username = match &basic.username {
                    Username::Literal(name) => name.clone(),
                    Username::Secret(r) => {
                        let name = read(r)?;
                        let text = name.expose().to_string();
                        written.push(name);
                        text
                    }
                };
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
                written.push(password);
                written.push(Secret::new(token.clone()));
                Ok((format!("Basic {token}"), written))
            }
            Self::SigV4(_) => Ok((String::new(), Vec::new())),
        }
    }

    /// The late part, on the final request (`body` when it is in memory): a signing kind signs and returns
    /// the values it wrote.
    pub fn late(
        &self,
        credential: &str,
        parts: &mut http::request::Parts,
        body: Option<&[u8]>,
        read: impl Fn(&SecretRef) -> Result<Secret, SwapError>,
    ) -> Result<Vec<Secret>, SwapError> {
        match self {
            Self::Swap(_) | Self::Basic(_) => Ok(Vec::new()),
            Self::SigV4(sigv4) => sigv4.sign(credential, parts, body, read),
        }
    }
}

/// The user:password text of a `Basic` authorization value, decoded, so that a placeholder inside it is found
/// (and an exfiltration through it caught) like one in plain text.
pub fn basic_decoded(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()
}

/// When a credential is written into a request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
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

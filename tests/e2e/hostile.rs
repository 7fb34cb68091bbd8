//! A hostile upstream hands the real secret back in every place a response can carry it: the reason phrase,
//! interim responses, every header (one secret split over several lines of one name included), trailers, and
//! the body in every encoding it can claim, cut into chunks at every offset inside the secret, as SSE events;
//! in every form Keyward scrubs (raw, formatted, percent-encoded with upper or lower hex or `+` for space,
//! JSON-escaped as serde, Go and PHP do). Over HTTP/1.1 (written byte by byte) and HTTP/2 upstream, to curl over HTTP/1.1 and HTTP/2,
//! with and without `--compressed`.
//!
//! Each row names its exact outcome: scrubbed (placeholders where the secret was), refused (502 with the
//! documented code), or broken off (a body that cannot be decoded). Whatever the row, the agent's bytes
//! (headers, each header's lines joined as a client joins them, body, the body inflated if it is compressed;
//! each also percent-decoded and JSON-unescaped, and compared case-insensitively) must hold no real secret.

use std::sync::Arc;

use tokio::process::Command;
use tokio::task::JoinSet;

use crate::routes;
use crate::support::hostile::{gzip, raw_deflate, zlib, Framing, Hostile, Reply, Seen, Up};
use crate::support::proxy::Proxy;
use crate::support::{secret, MARKER, SECRETS};

const BOTH: &[Up] = &[Up::H1, Up::H2];
const H1: &[Up] = &[Up::H1];

const OPENAI: &str = "kw-placeholder-openai";
const MAPS: &str = "kw-placeholder-maps";
const ORG: &str = "kw-org-placeholder";

/// The values the upstream echoes, derived from what it received.
struct Echo<'a>(&'a Seen);

impl Echo<'_> {
    /// `Bearer <openai secret>`: the formatted form.
    fn auth(&self) -> &str {
        &self.0.authorization
    }

    fn token(&self) -> &str {
        self.auth().strip_prefix("Bearer ").unwrap_or_default()
    }

    /// The maps secret percent-encoded, upper-case hex, as Keyward wrote it into the query.
    fn key(&self) -> &str {
        &self.0.key
    }

    fn key_lower(&self) -> String {
        let mut out = String::new();
        let mut after_percent = 0;
        for c in self.key().chars() {
            if c == '%' {
                after_percent = 2;
                out.push(c);
            } else if after_percent > 0 {
                after_percent -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The maps secret decoded (raw).
    fn key_plain(&self) -> String {
        percent_encoding::percent_decode_str(self.key())
            .decode_utf8_lossy()
            .into_owned()
    }

    fn org(&self) -> &str {
        &self.0.organization
    }

    /// A JSON body with every form of every secret (serde's escaping is the JSON-escaped form).
    fn json(&self) -> Vec<u8> {
        serde_json::json!({
            "you_sent": self.auth(),
            "token": self.token(),
            "key": self.key(),
            "key_lower": self.key_lower(),
            "key_plain": self.key_plain(),
            "org": self.org(),
        })
        .to_string()
        .into_bytes()
    }

    /// Each secret form, in order: openai token, maps key (upper hex, lower hex, decoded), organization.
    fn forms(&self) -> Vec<String> {
        vec![
            self.token().to_string(),
            self.key().to_string(),
            self.key_lower(),
            self.key_plain(),
            self.org().to_string(),
        ]
    }
}

/// What [`Echo::json`] becomes once scrubbed.
fn json_scrubbed() -> Vec<String> {
    [
        format!(r#""you_sent":"Bearer {OPENAI}""#),
        format!(r#""token":"{OPENAI}""#),
        format!(r#""key":"{MAPS}""#),
        format!(r#""key_lower":"{MAPS}""#),
        format!(r#""key_plain":"{MAPS}""#),
        format!(r#""org":"{ORG}""#),
    ]
    .into()
}

/// Placeholders for [`Echo::forms`], in the same order, with each form's length.
fn forms_scrubbed() -> Vec<(&'static str, usize)> {
    let maps = keyward::credentials::forms(secret("maps_key"));
    let upper = maps.iter().find(|f| f.contains(&b'%')).unwrap().len();
    vec![
        (OPENAI, secret("openai_key").len()),
        (MAPS, upper),
        (MAPS, upper),
        (MAPS, secret("maps_key").len()),
        (ORG, secret("org_id").len()),
    ]
}

/// Every value, once per offset inside it (`<` value `> `), cut into chunks at that offset: chunk boundaries fall
/// at every position inside every secret.
fn split_everywhere(values: &[String]) -> Vec<Vec<u8>> {
    let mut chunks = vec![Vec::new()];
    for v in values {
        let v = v.as_bytes();
        for k in 1..v.len() {
            let last = chunks.last_mut().unwrap();
            last.push(b'<');
            last.extend_from_slice(&v[..k]);
            let mut next = v[k..].to_vec();
            next.extend_from_slice(b"> ");
            chunks.push(next);
        }
    }
    chunks
}

/// What [`split_everywhere`] becomes once scrubbed.
fn split_everywhere_scrubbed() -> String {
    forms_scrubbed()
        .into_iter()
        .map(|(placeholder, len)| format!("<{placeholder}> ").repeat(len - 1))
        .collect()
}

/// `value` cut in two inside itself.
fn halves(value: &str) -> (&str, &str) {
    value.split_at(value.len() / 2)
}

/// SSE events, each cut in two inside the secret it carries.
fn sse_chunks(e: &Echo) -> Vec<Vec<u8>> {
    let events = [
        format!("data: {{\"token\":\"{}\"}}\n\n", e.auth()),
        format!("event: key\ndata: {}\n\n", e.key()),
        format!("data: {}\n\n", e.key_lower()),
        format!("data: {}\n\n", e.org()),
        "data: done\n\n".to_string(),
    ];
    let mut chunks = Vec::new();
    for event in events {
        let at = event
            .find("REALSECRET")
            .map_or(event.len() / 2, |at| at + MARKER.len() / 2);
        chunks.push(event.as_bytes()[..at].to_vec());
        chunks.push(event.as_bytes()[at..].to_vec());
    }
    chunks
}

fn sse_scrubbed() -> Vec<String> {
    [
        format!("data: {{\"token\":\"Bearer {OPENAI}\"}}\n\n"),
        format!("event: key\ndata: {MAPS}\n\n"),
        format!("data: {MAPS}\n\ndata: {ORG}\n\ndata: done\n\n"),
    ]
    .into()
}

#[derive(Clone, Debug)]
enum Expect {
    /// Delivered with `status`; each of `shows` is in the headers or the body, none of `absent` (both compared
    /// case-insensitively), and to an HTTP/2 agent each of `trailers` (hyper's HTTP/1.1 server sends trailers
    /// only to a client that asked for them with `TE: trailers`; curl does not).
    Scrubbed {
        status: u16,
        shows: Vec<String>,
        absent: Vec<String>,
        trailers: Vec<String>,
    },
    /// 502 with this error code.
    Refused(&'static str),
    /// The transfer breaks off (curl fails): what a body that cannot be decoded gets.
    Broken,
}

fn scrubbed(status: u16, shows: &[String]) -> Expect {
    Expect::Scrubbed {
        status,
        shows: shows.to_vec(),
        absent: Vec::new(),
        trailers: Vec::new(),
    }
}

/// Delivered decoded: no `Content-Encoding` left.
fn decoded(shows: &[String]) -> Expect {
    Expect::Scrubbed {
        status: 200,
        shows: shows.to_vec(),
        absent: vec!["content-encoding".into()],
        trailers: Vec::new(),
    }
}

struct Row {
    name: &'static str,
    ups: &'static [Up],
    reply: fn(&Echo) -> Reply,
    expect: Expect,
}

fn row(name: &'static str, ups: &'static [Up], reply: fn(&Echo) -> Reply, expect: Expect) -> Row {
    Row {
        name,
        ups,
        reply,
        expect,
    }
}

fn json_reply(status: u16) -> Reply {
    Reply::new(status).header("Content-Type", "application/json")
}

/// The channels and encodings Keyward scrubs or refuses today, each with its exact outcome.
fn documented_rows() -> Vec<Row> {
    let json = json_scrubbed();
    let s = |v: &str| vec![v.to_string()];
    vec![
        // The reason phrase: dropped, the client sees the canonical one.
        row(
            "reason-phrase",
            H1,
            |e| {
                json_reply(401)
                    .reason(format!("Invalid key {} for key={}", e.auth(), e.key()))
                    .body(r#"{"error":"invalid"}"#)
            },
            Expect::Scrubbed {
                status: 401,
                shows: s(r#"{"error":"invalid"}"#),
                absent: s("invalid key"),
                trailers: Vec::new(),
            },
        ),
        // Interim responses (103 Early Hints, 100 with a reason) before the real one are not passed on.
        row(
            "interim-responses",
            H1,
            |e| {
                Reply::new(200)
                    .interim(format!("HTTP/1.1 100 Continue {}\r\n\r\n", e.auth()))
                    .interim(format!(
                        "HTTP/1.1 103 Early Hints\r\nLink: </v1/?key={}>; rel=preload\r\nX-Echo: {}\r\n\r\n",
                        e.key(),
                        e.auth()
                    ))
                    .body("after the interim responses")
            },
            Expect::Scrubbed {
                status: 200,
                shows: s("after the interim responses"),
                absent: s("rel=preload"),
                trailers: Vec::new(),
            },
        ),
        // Headers: every form, in ordinary and meaningful headers.
        row(
            "header-plain",
            BOTH,
            |e| {
                Reply::new(200)
                    .header("X-Echo-Auth", e.auth())
                    .header("X-Echo-Token", e.token())
                    .body("{}")
            },
            scrubbed(
                200,
                &[
                    format!("x-echo-auth: Bearer {OPENAI}"),
                    format!("x-echo-token: {OPENAI}"),
                ],
            ),
        ),
        row(
            "header-forms",
            BOTH,
            |e| {
                Reply::new(200)
                    .header("X-Key-Upper", e.key())
                    .header("X-Key-Lower", e.key_lower())
                    .header("X-Key-Plain", e.key_plain())
                    .header(
                        "X-Json",
                        serde_json::json!({"token": e.token(), "key": e.key_plain()}).to_string(),
                    )
                    .header("X-Org", e.org())
                    .body("{}")
            },
            scrubbed(
                200,
                &[
                    format!("x-key-upper: {MAPS}"),
                    format!("x-key-lower: {MAPS}"),
                    format!("x-key-plain: {MAPS}"),
                    format!(r#""token":"{OPENAI}""#),
                    format!(r#""key":"{MAPS}""#),
                    format!("x-org: {ORG}"),
                ],
            ),
        ),
        row(
            "header-location",
            BOTH,
            |e| {
                Reply::new(302)
                    .header(
                        "Location",
                        format!("https://localhost/v1/?key={}&again={}", e.key(), e.key_lower()),
                    )
                    .body("")
            },
            scrubbed(
                302,
                &[format!("location: https://localhost/v1/?key={MAPS}&again={MAPS}")],
            ),
        ),
        row(
            "header-set-cookie",
            BOTH,
            |e| {
                Reply::new(200)
                    .header("Set-Cookie", format!("session={}; Path=/; Secure; HttpOnly", e.token()))
                    .header("Set-Cookie", format!("maps={}; Path=/", e.key()))
                    .body("{}")
            },
            scrubbed(
                200,
                &[
                    format!("set-cookie: session={OPENAI}; Path=/; Secure; HttpOnly"),
                    format!("set-cookie: maps={MAPS}; Path=/"),
                ],
            ),
        ),
        row(
            "header-www-authenticate",
            BOTH,
            |e| {
                Reply::new(401)
                    .header(
                        "WWW-Authenticate",
                        format!(
                            r#"Bearer realm="api", error="invalid_token", error_description="{} is revoked""#,
                            e.auth()
                        ),
                    )
                    .body("")
            },
            scrubbed(
                401,
                &[format!(
                    r#"www-authenticate: Bearer realm="api", error="invalid_token", error_description="Bearer {OPENAI} is revoked""#
                )],
            ),
        ),
        row(
            "header-obs-text-around",
            BOTH,
            |e| {
                Reply::new(200)
                    .header("X-Echo", format!("\u{ff}{}\u{ff}", e.auth()))
                    .body("{}")
            },
            scrubbed(200, &[format!("Bearer {OPENAI}")]),
        ),
        // A secret split over lines of one header name (a client joins them): refused.
        row(
            "header-split-in-two",
            BOTH,
            |e| {
                let (a, b) = halves(e.token());
                Reply::new(200).header("X-Part", a).header("X-Part", b).body("{}")
            },
            Expect::Refused("unscrubbable_header"),
        ),
        row(
            "header-split-in-three-after-a-harmless-line",
            BOTH,
            |e| {
                let key = e.key();
                Reply::new(200)
                    .header("X-Part", "harmless")
                    .header("X-Part", &key[..5])
                    .header("X-Part", &key[5..15])
                    .header("X-Part", &key[15..])
                    .body("{}")
            },
            Expect::Refused("unscrubbable_header"),
        ),
        // The same, next to a line that holds the whole secret (which alone would be scrubbed).
        row(
            "header-split-beside-a-whole-one",
            BOTH,
            |e| {
                let (a, b) = halves(e.token());
                Reply::new(200)
                    .header("X-Part", e.token())
                    .header("X-Part", a)
                    .header("X-Part", b)
                    .body("{}")
            },
            Expect::Refused("unscrubbable_header"),
        ),
        // Trailers: scrubbed; split over two lines, dropped.
        row(
            "trailers",
            BOTH,
            |e| {
                Reply::new(200)
                    .chunks(vec![b"{\"ok\":".to_vec(), b"true}".to_vec()])
                    .trailer("X-Trailer-Auth", e.auth())
                    .trailer("X-Trailer-Key", e.key())
            },
            Expect::Scrubbed {
                status: 200,
                shows: s(r#"{"ok":true}"#),
                absent: Vec::new(),
                trailers: vec![
                    format!("x-trailer-auth: Bearer {OPENAI}"),
                    format!("x-trailer-key: {MAPS}"),
                ],
            },
        ),
        row(
            "trailers-split",
            BOTH,
            |e| {
                let (a, b) = halves(e.token());
                Reply::new(200)
                    .chunks(vec![b"{\"ok\":true}".to_vec()])
                    .trailer("X-Trailer-Part", a)
                    .trailer("X-Trailer-Part", b)
            },
            Expect::Scrubbed {
                status: 200,
                shows: s(r#"{"ok":true}"#),
                absent: s("x-trailer-part"),
                trailers: Vec::new(),
            },
        ),
        // Bodies.
        row(
            "body-identity",
            BOTH,
            |e| json_reply(200).body(e.json()),
            scrubbed(200, &json),
        ),
        row(
            "body-close-delimited",
            H1,
            |e| json_reply(200).body(e.json()).framing(Framing::Close),
            scrubbed(200, &json),
        ),
        row(
            "body-split-at-every-offset",
            BOTH,
            |e| Reply::new(200).chunks(split_everywhere(&e.forms())),
            scrubbed(200, &[split_everywhere_scrubbed()]),
        ),
        row(
            "body-chunk-extensions",
            H1,
            |e| {
                Reply::new(200)
                    .chunks(vec![b"{\"ok\":".to_vec(), b"true}".to_vec()])
                    .chunk_extension(format!("echo=\"{}\";key={}", e.auth(), e.key()))
            },
            scrubbed(200, &s(r#"{"ok":true}"#)),
        ),
        row(
            "body-one-byte-chunks",
            BOTH,
            |e| json_reply(200).chunks(e.json().into_iter().map(|b| vec![b]).collect()),
            scrubbed(200, &json),
        ),
        row(
            "body-gzip",
            BOTH,
            |e| json_reply(200).header("Content-Encoding", "gzip").body(gzip(&e.json())),
            decoded(&json),
        ),
        row(
            "body-x-gzip",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "x-gzip")
                    .body(gzip(&e.json()))
            },
            decoded(&json),
        ),
        row(
            "body-gzip-upper-case",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", " GZIP ")
                    .body(gzip(&e.json()))
            },
            decoded(&json),
        ),
        row(
            "body-deflate",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "deflate")
                    .body(zlib(&e.json()))
            },
            decoded(&json),
        ),
        row(
            "body-gzip-in-five-byte-chunks",
            BOTH,
            |e| {
                let body = gzip(&e.json());
                json_reply(200)
                    .header("Content-Encoding", "gzip")
                    .chunks(body.chunks(5).map(<[u8]>::to_vec).collect())
            },
            decoded(&json),
        ),
        row(
            "body-gzip-secret-across-a-decoder-step",
            BOTH,
            |e| {
                // The decoder hands out 64 KiB at a time: the secret straddles the first step's end.
                let mut plain = vec![b'x'; 64 * 1024 - 10];
                plain.extend_from_slice(format!("{} tail", e.token()).as_bytes());
                Reply::new(200).header("Content-Encoding", "gzip").body(gzip(&plain))
            },
            decoded(&[format!("xxxxxxxx{OPENAI} tail")]),
        ),
        row(
            "body-gzip-then-plain-garbage",
            BOTH,
            |e| {
                let mut body = gzip(&e.json());
                body.extend_from_slice(&e.json());
                json_reply(200).header("Content-Encoding", "gzip").body(body)
            },
            decoded(&json),
        ),
        row(
            "body-identity-then-gzip-headers",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "identity")
                    .header("Content-Encoding", "gzip")
                    .body(gzip(&e.json()))
            },
            decoded(&json),
        ),
        row(
            "body-gzip-named-hop-by-hop",
            H1,
            |e| {
                json_reply(200)
                    .header("Connection", "close, Content-Encoding")
                    .header("Content-Encoding", "gzip")
                    .body(gzip(&e.json()))
            },
            decoded(&json),
        ),
        row(
            "body-gzip-gzip",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "gzip, gzip")
                    .body(gzip(&gzip(&e.json())))
            },
            Expect::Refused("unscrubbable_encoding"),
        ),
        row(
            "body-gzip-on-two-lines",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "gzip")
                    .header("Content-Encoding", "gzip")
                    .body(gzip(&gzip(&e.json())))
            },
            Expect::Refused("unscrubbable_encoding"),
        ),
        row(
            "body-gzip-br",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "gzip, br")
                    .body(gzip(&e.json()))
            },
            Expect::Refused("unscrubbable_encoding"),
        ),
        row(
            "body-br",
            BOTH,
            |e| json_reply(200).header("Content-Encoding", "br").body(e.json()),
            Expect::Refused("unscrubbable_encoding"),
        ),
        // Mislabelled bodies: broken off, never passed through.
        row(
            "body-deflate-label-on-gzip",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "deflate")
                    .body(gzip(&e.json()))
            },
            Expect::Broken,
        ),
        row(
            "body-deflate-label-on-raw-deflate",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", "deflate")
                    .body(raw_deflate(&e.json()))
            },
            Expect::Broken,
        ),
        row(
            "body-gzip-label-on-plain",
            BOTH,
            |e| json_reply(200).header("Content-Encoding", "gzip").body(e.json()),
            Expect::Broken,
        ),
        row(
            "body-gzip-truncated",
            BOTH,
            |e| {
                let mut body = gzip(&e.json());
                body.truncate(body.len() / 2);
                json_reply(200).header("Content-Encoding", "gzip").body(body)
            },
            Expect::Broken,
        ),
        // Server-sent events, each cut inside its secret.
        row(
            "sse",
            BOTH,
            |e| {
                Reply::new(200)
                    .header("Content-Type", "text/event-stream")
                    .chunks(sse_chunks(e))
            },
            scrubbed(200, &sse_scrubbed()),
        ),
        row(
            "sse-gzip",
            BOTH,
            |e| {
                let body = gzip(&sse_chunks(e).concat());
                Reply::new(200)
                    .header("Content-Type", "text/event-stream")
                    .header("Content-Encoding", "gzip")
                    .chunks(body.chunks(7).map(<[u8]>::to_vec).collect())
            },
            decoded(&sse_scrubbed()),
        ),
    ]
}

/// Places and spellings found by a second pass: header names, upstream text quoted in refusals, `+` for space,
/// JSON `\u` escapes, transfer codings, and empty bodies labelled gzip (which must not break).
fn second_pass_rows() -> Vec<Row> {
    vec![
        // Header names are tokens: `sk-...-5a1f7c` and `key%20...%3D33` are valid names (lower-cased on the way).
        // A name cannot be rewritten: refused.
        row(
            "header-name-is-the-secret",
            BOTH,
            |e| Reply::new(200).header(e.token(), "1").header(e.key(), "1").body("{}"),
            Expect::Refused("unscrubbable_header"),
        ),
        // The refusal's message quotes the upstream's Content-Encoding.
        row(
            "content-encoding-is-the-secret",
            BOTH,
            |e| {
                json_reply(200)
                    .header("Content-Encoding", format!("gzip, {}, {}", e.token(), e.key_plain()))
                    .body(gzip(&e.json()))
            },
            Expect::Refused("unscrubbable_encoding"),
        ),
        // The refusal's message quotes the name of the header a secret was split over.
        row(
            "split-over-a-header-named-like-the-secret",
            BOTH,
            |e| {
                let (a, b) = halves(e.token());
                Reply::new(200).header(e.key(), a).header(e.key(), b).body("{}")
            },
            Expect::Refused("unscrubbable_header"),
        ),
        // An obsolete line folding inside a header value.
        row(
            "header-obs-fold",
            H1,
            |e| {
                Reply::new(200)
                    .header("X-Echo", format!("Bearer\r\n {}", e.token()))
                    .body("{}")
            },
            Expect::Refused("upstream_failed"),
        ),
        // `+` for a space (application/x-www-form-urlencoded, what Go's url.Values and Python's urlencode write).
        row(
            "query-plus-for-space",
            BOTH,
            |e| {
                Reply::new(302)
                    .header(
                        "Location",
                        format!("https://localhost/v1/?key={}", e.key().replace("%20", "+")),
                    )
                    .body(format!("moved to ?key={}", e.key().replace("%20", "+")))
            },
            scrubbed(302, &[]),
        ),
        // JSON's \u escapes (Go's encoding/json writes `&` as \u0026; PHP writes `/` as \/).
        row(
            "json-unicode-escapes",
            BOTH,
            |e| json_reply(200).body(format!(r#"{{"key":"{}"}}"#, e.key_plain().replace('&', "\\u0026"))),
            scrubbed(200, &[]),
        ),
        // A transfer coding is hop-by-hop: stripped, but the bytes stay compressed.
        row(
            "transfer-encoding-gzip",
            H1,
            |e| {
                json_reply(200)
                    .header("Transfer-Encoding", "gzip, chunked")
                    .chunks(vec![gzip(&e.json())])
            },
            Expect::Refused("unscrubbable_encoding"),
        ),
        // An empty body labelled gzip (a 304 for a gzipped resource, a 204, an empty 200) is not a corrupt one.
        row(
            "empty-gzip-304",
            BOTH,
            |_| {
                Reply::new(304)
                    .header("Content-Encoding", "gzip")
                    .header("ETag", "\"v1\"")
            },
            scrubbed(304, &[]),
        ),
        row(
            "empty-gzip-200",
            BOTH,
            |_| Reply::new(200).header("Content-Encoding", "gzip"),
            scrubbed(200, &[]),
        ),
        row(
            "empty-gzip-204",
            BOTH,
            |_| Reply::new(204).header("Content-Encoding", "gzip"),
            scrubbed(204, &[]),
        ),
    ]
}

/// What curl, as the agent, got.
struct Got {
    status: u16,
    /// curl's exit code.
    exit: Option<i32>,
    /// `-D` output (every response head, then trailers) and curl's own messages.
    headers: String,
    body: Vec<u8>,
}

async fn agent(proxy: &Proxy, url: &str, http2: bool, compressed: bool) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "15", "-o", "-", "-D", "/dev/stderr"])
        .args(["-w", "\n%{http_code}", "-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert())
        .args(["-H", "Authorization: Bearer kw-placeholder-openai"])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(compressed.then_some("--compressed"))
        .arg(url)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("curl finished in time")
        .expect("curl runs");
    let stdout = out.stdout;
    let split = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&stdout[(split + 1).min(stdout.len())..])
        .trim()
        .parse()
        .unwrap_or(0);
    Got {
        status,
        exit: out.status.code(),
        headers: String::from_utf8_lossy(&out.stderr).into_owned(),
        body: stdout[..split].to_vec(),
    }
}

/// Each header's lines joined without a separator, as a secret split over them would read.
fn joined_headers(headers: &str) -> String {
    let mut joined: Vec<(String, String)> = Vec::new();
    for line in headers.lines() {
        if line.starts_with("HTTP/") {
            joined.clear();
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match joined.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push_str(value),
            None => joined.push((name, value.to_string())),
        }
    }
    joined.into_iter().map(|(n, v)| format!("{n}: {v}\n")).collect()
}

/// `\uXXXX`, `\/`, `\"` and `\\` undone.
fn json_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn inflate(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out).ok()?;
    } else if body.first() == Some(&0x78) {
        flate2::read::ZlibDecoder::new(body).read_to_end(&mut out).ok()?;
    } else {
        return None;
    }
    Some(out)
}

/// Which real secrets the agent got, and where; never the values themselves.
fn leaks(got: &Got) -> Vec<String> {
    let mut views = vec![
        ("headers", got.headers.clone()),
        ("joined header lines", joined_headers(&got.headers)),
        ("body", String::from_utf8_lossy(&got.body).into_owned()),
    ];
    if let Some(inflated) = inflate(&got.body) {
        views.push(("inflated body", String::from_utf8_lossy(&inflated).into_owned()));
    }
    let mut found = Vec::new();
    for (place, text) in views {
        let spellings = [
            ("", text.clone()),
            (
                ", percent-decoded",
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned(),
            ),
            (", JSON-unescaped", json_unescape(&text)),
        ];
        let mut here = Vec::new();
        for (name, value) in SECRETS {
            let lower = value.to_lowercase();
            let how = spellings.iter().find_map(|(how, text)| {
                if text.contains(value) {
                    Some(format!("{name} in the {place}{how}"))
                } else {
                    text.to_lowercase()
                        .contains(&lower)
                        .then(|| format!("{name}, lower-cased, in the {place}{how}"))
                }
            });
            here.extend(how);
        }
        let marker = MARKER.to_lowercase();
        if here.is_empty() && spellings.iter().any(|(_, t)| t.to_lowercase().contains(&marker)) {
            here.push(format!("a piece of a secret in the {place}"));
        }
        found.extend(here);
    }
    found.dedup();
    found
}

/// Output fit for an assertion message: every secret, and anything with the marker, masked.
fn masked(text: &str) -> String {
    let mut out = text.to_string();
    for (_, value) in SECRETS {
        out = out.replace(value, "<real secret>");
    }
    let lower = out.to_ascii_lowercase();
    let needle = &MARKER.to_ascii_lowercase()[..7];
    let mut clean = String::new();
    let mut rest = 0;
    for (at, _) in lower.match_indices(needle) {
        if at >= rest {
            clean.push_str(&out[rest..at]);
            clean.push_str("<real secret piece>");
            rest = at + needle.len();
        }
    }
    clean.push_str(&out[rest..]);
    clean.chars().take(600).collect()
}

/// Everything wrong with one outcome (empty when it is exactly as expected).
fn check(expect: &Expect, got: &Got, http2: bool) -> Vec<String> {
    let mut wrong: Vec<String> = leaks(got).into_iter().map(|l| format!("LEAK: {l}")).collect();
    let body = String::from_utf8_lossy(&got.body);
    let all = format!("{}\n{}", got.headers, body).to_lowercase();
    match expect {
        Expect::Scrubbed {
            status,
            shows,
            absent,
            trailers,
        } => {
            if got.status != *status || got.exit != Some(0) {
                wrong.push(format!(
                    "expected {status}, got {} (curl exit {:?})",
                    got.status, got.exit
                ));
            }
            for s in shows {
                if !all.contains(&s.to_lowercase()) {
                    wrong.push(format!("missing {s:?}"));
                }
            }
            if http2 {
                // curl writes trailers to its -D output, after the head.
                for t in trailers {
                    if !all.contains(&t.to_lowercase()) {
                        wrong.push(format!("missing trailer {t:?}"));
                    }
                }
            }
            for a in absent {
                if all.contains(&a.to_lowercase()) {
                    wrong.push(format!("unexpected {a:?}"));
                }
            }
            if !http2 {
                let canonical = http::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                // The last head: the first is the proxy's answer to CONNECT.
                let line = format!("HTTP/1.1 {status} {canonical}");
                let last = got.headers.lines().rfind(|l| l.starts_with("HTTP/"));
                if last.map(str::trim_end) != Some(line.as_str()) {
                    wrong.push(format!("status line {last:?}, expected {line:?}"));
                }
            }
        }
        Expect::Refused(code) => {
            let error = serde_json::from_slice::<serde_json::Value>(&got.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            if got.status != 502 || error.as_deref() != Some(code) {
                wrong.push(format!("expected 502 {code}, got {} with error {error:?}", got.status));
            }
        }
        Expect::Broken => {
            if got.exit == Some(0) {
                wrong.push(format!("expected a broken transfer, got a complete {}", got.status));
            }
        }
    }
    if !wrong.is_empty() {
        wrong.push(format!(
            "agent saw headers: {}\nbody: {}",
            masked(&got.headers),
            masked(&body)
        ));
    }
    wrong
}

/// Runs every row over each of its upstream protocols, to curl over HTTP/1.1 and HTTP/2, with and without
/// `--compressed`, a few at a time; returns every failure.
async fn run(rows: Vec<Row>) -> Vec<String> {
    let rows = Arc::new(rows);
    let table = rows.clone();
    let hostile = Hostile::start(Arc::new(move |seen: &Seen| {
        let name = seen.path.strip_prefix("/row/").unwrap_or_default();
        match table.iter().find(|r| r.name == name) {
            Some(row) => (row.reply)(&Echo(seen)),
            None => Reply::new(404).body("no such row"),
        }
    }))
    .await;
    let proxy = Arc::new(Proxy::spawn(routes()).await);
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut runs = JoinSet::new();
    let mut expected_requests = 0;
    for (i, row) in rows.iter().enumerate() {
        for &up in row.ups {
            for http2 in [false, true] {
                for compressed in [true, false] {
                    expected_requests += 1;
                    let (proxy, limit, rows) = (proxy.clone(), limit.clone(), rows.clone());
                    let url = format!(
                        "https://localhost:{}/row/{}?key=kw-placeholder-maps",
                        hostile.port(up),
                        row.name
                    );
                    runs.spawn(async move {
                        let _permit = limit.acquire().await.unwrap();
                        let row = &rows[i];
                        let got = agent(&proxy, &url, http2, compressed).await;
                        check(&row.expect, &got, http2)
                            .into_iter()
                            .map(|w| {
                                let agent = if http2 { "h2" } else { "h1" };
                                let flag = if compressed { "--compressed" } else { "raw" };
                                format!("{} (upstream {up:?}, agent {agent}, {flag}): {w}", row.name)
                            })
                            .collect::<Vec<_>>()
                    });
                }
            }
        }
    }
    let mut failures = Vec::new();
    while let Some(result) = runs.join_next().await {
        failures.extend(result.expect("a run panicked"));
    }
    // The upstream did get the real values, so the table tested something.
    let seen = hostile.seen();
    assert_eq!(seen.len(), expected_requests, "every run reached the upstream");
    let key = keyward::credentials::forms(secret("maps_key"))
        .into_iter()
        .find(|f| f.contains(&b'%'))
        .unwrap();
    for s in &seen {
        assert!(
            s.authorization == format!("Bearer {}", secret("openai_key"))
                && s.organization == secret("org_id")
                && s.key.as_bytes() == key,
            "the upstream got the real values: {s:?}"
        );
    }
    // Keyward's own records must not hold a secret in any case either (the proxy's drop checks the exact ones).
    let records = format!("{}{:?}", proxy.logs(), proxy.audit_lines()).to_lowercase();
    if records.contains(&MARKER.to_lowercase()) {
        failures.push("LEAK: keyward's log or audit lines hold a lower-cased real secret".into());
    }
    failures.sort();
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_upstream_gets_only_placeholders_or_a_refusal_to_the_agent() {
    let failures = run(documented_rows()).await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nor_through_header_names_quoted_refusals_other_spellings_or_transfer_codings() {
    let failures = run(second_pass_rows()).await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

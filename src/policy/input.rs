//! The policy input document: who is calling, what the request is, and when. Its shape is documented in the
//! README and kept stable.
//!
//! It is built before credentials are written, so it holds placeholders at most. Even those are masked, as are
//! headers that conventionally carry credentials: a policy author never needs a credential value to decide.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

/// Headers whose values never reach the policy.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];
pub const REDACTED: &str = "<redacted>";

pub struct Agent {
    pub id: String,
    pub labels: BTreeMap<String, String>,
}

/// What the policy may know of the request body.
pub enum Body {
    /// A JSON body within the size limit, parsed, and its size in bytes as received.
    Json { value: Value, size: u64 },
    /// Not JSON, over the limit, or not valid JSON: only the size is given, when it is known.
    Unparsed { size: Option<u64> },
    /// JSON with an object that repeats a key (`{"amount":250000,"amount":1}`): the policy would judge one
    /// value while an upstream may act on the other, so the request is refused.
    DuplicateKey,
}

impl Body {
    /// Parses a body the policy may read.
    pub fn parse(bytes: &[u8]) -> Self {
        match serde_json::from_slice::<Strict>(bytes) {
            Ok(Strict(value)) => Self::Json {
                value,
                size: bytes.len() as u64,
            },
            Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => Self::DuplicateKey,
            Err(_) => Self::Unparsed {
                size: Some(bytes.len() as u64),
            },
        }
    }
}

/// A JSON value whose objects have no repeated key.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

pub struct Request<'a> {
    pub scheme: &'static str,
    pub host: &'a str,
    pub port: u16,
    pub parts: &'a http::request::Parts,
    pub body: Body,
}

pub struct Context<'a> {
    pub agent: &'a Agent,
    pub user: Option<&'a str>,
    pub route: Option<&'a str>,
    pub credentials: &'a [String],
    pub now: DateTime<Tz>,
    /// True for byte strings that contain a placeholder.
    pub has_placeholder: &'a dyn Fn(&[u8]) -> bool,
}

pub fn build(ctx: &Context, req: Request) -> Value {
    let mask = |v: &[u8]| (ctx.has_placeholder)(v);
    let mut headers = Map::new();
    for (name, value) in &req.parts.headers {
        let shown = if SENSITIVE_HEADERS.contains(&name.as_str()) || mask(value.as_bytes()) {
            REDACTED.to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&shown);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(shown));
            }
        }
    }
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in req.parts.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let value = decode(v);
        let value = if mask(value.as_bytes()) {
            REDACTED.to_string()
        } else {
            value
        };
        query.entry(decode(k)).or_default().push(value);
    }
    let (body, body_size, parsed) = match req.body {
        Body::Json { value, size } => (value, Some(size), true),
        Body::Unparsed { size } => (Value::Null, size, false),
        Body::DuplicateKey => (Value::Null, None, false),
    };
    let jsonrpc = jsonrpc(&body);
    let [rfc3339, date, weekday] = time_texts(&ctx.now);
    let mut doc = json!({
        "agent": { "id": ctx.agent.id, "labels": ctx.agent.labels },
        "user": ctx.user.map(|id| json!({ "id": id })),
        "request": {
            "method": req.parts.method.as_str(),
            "scheme": req.scheme,
            "host": req.host,
            "port": req.port,
            "path": req.parts.uri.path(),
            "query": query,
            "headers": headers,
            "body": body,
            "body_size": body_size,
            "body_parsed": parsed,
        },
        "route": ctx.route,
        "credentials": ctx.credentials,
        "time": {
            "rfc3339": rfc3339,
            "date": date,
            "weekday": weekday,
            "weekday_number": ctx.now.weekday().number_from_monday(),
            "hour": ctx.now.hour(),
            "minute": ctx.now.minute(),
            "timezone": ctx.now.timezone().name(),
        },
    });
    if let Some(rpc) = jsonrpc {
        doc["jsonrpc"] = rpc;
    }
    doc
}

/// `input.time`'s text fields (second precision), formatted once per second and time zone on each thread:
/// chrono formatting was a measurable part of building the document.
fn time_texts(now: &DateTime<Tz>) -> [String; 3] {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(i64, Tz, [String; 3])>> = const { RefCell::new(None) };
    }
    let (second, tz) = (now.timestamp(), now.timezone());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((s, z, texts)) if *s == second && *z == tz => texts.clone(),
            _ => {
                let whole = now.with_nanosecond(0).unwrap_or(*now);
                let texts = [
                    whole.to_rfc3339(),
                    whole.format("%Y-%m-%d").to_string(),
                    whole.format("%A").to_string(),
                ];
                *last = Some((second, tz, texts.clone()));
                texts
            }
        }
    })
}

/// MCP over HTTP and other JSON-RPC: the method, and for `tools/call` the tool name and its arguments, so that
/// policies can allow per tool. A batch becomes `{"batch": [...]}` with one entry per call.
fn jsonrpc(body: &Value) -> Option<Value> {
    let one = |call: &Value| -> Option<Value> {
        let obj = call.as_object()?;
        obj.get("jsonrpc")?;
        let method = obj.get("method")?.as_str()?;
        let params = obj.get("params").cloned().unwrap_or(Value::Null);
        let mut out = json!({ "method": method, "id": obj.get("id"), "params": params });
        if method == "tools/call" {
            out["tool"] = params.get("name").cloned().unwrap_or(Value::Null);
            out["arguments"] = params.get("arguments").cloned().unwrap_or(Value::Null);
        }
        Some(out)
    };
    match body {
        Value::Array(calls) if !calls.is_empty() => {
            let batch: Option<Vec<Value>> = calls.iter().map(one).collect();
            batch.map(|b| json!({ "batch": b }))
        }
        _ => one(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_ambiguous() {
        assert!(matches!(
            Body::parse(br#"{"Amount":250000,"Amount":1}"#),
            Body::DuplicateKey
        ));
        assert!(matches!(Body::parse(br#"[{"a":{"b":1,"b":2}}]"#), Body::DuplicateKey));
        assert!(matches!(Body::parse(br#"{"amount":1,"Amount":2}"#), Body::Json { .. }));
        assert!(matches!(Body::parse(b"{not json"), Body::Unparsed { size: Some(9) }));
        let Body::Json { value, size } = Body::parse(br#"{"a":[1,2.5,"x",null,true]}"#) else {
            panic!()
        };
        assert_eq!((value, size), (json!({"a":[1,2.5,"x",null,true]}), 27));
    }

    #[test]
    fn document_shape_redaction_and_jsonrpc() {
        let agent = Agent {
            id: "bot".into(),
            labels: BTreeMap::from([("team".into(), "sales".into())]),
        };
        let has = |b: &[u8]| b.windows(5).any(|w| w == b"kw-ph");
        let ctx = Context {
            agent: &agent,
            user: Some("alice"),
            route: Some("mcp"),
            credentials: &["tok".to_string()],
            now: chrono_tz::Europe::Paris
                .with_ymd_and_hms(2026, 11, 23, 14, 5, 0)
                .unwrap(),
            has_placeholder: &has,
        };
        let p = parts(
            "/mcp?a=1&a=2&k=kw-ph-x",
            &[
                ("authorization", "Bearer kw-ph-x"),
                ("x-custom", "kw-ph-y"),
                ("x-plain", "v"),
                ("x-plain", "w"),
            ],
        );
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search", "arguments": {"q": "x"}}});
        let doc = build(
            &ctx,
            Request {
                scheme: "https",
                host: "mcp.example",
                port: 443,
                parts: &p,
                body: Body::Json { value: body, size: 90 },
            },
        );
        assert_eq!(doc["agent"]["labels"]["team"], "sales");
        assert_eq!(doc["user"]["id"], "alice");
        assert_eq!(
            doc["request"]["body_size"], 90,
            "the size as received, not re-serialised"
        );
        assert_eq!(doc["request"]["query"]["a"], json!(["1", "2"]));
        assert_eq!(doc["request"]["query"]["k"], json!([REDACTED]));
        assert_eq!(doc["request"]["headers"]["authorization"], REDACTED);
        assert_eq!(doc["request"]["headers"]["x-custom"], REDACTED);
        assert_eq!(doc["request"]["headers"]["x-plain"], "v, w");
        assert_eq!(doc["jsonrpc"]["tool"], "search");
        assert_eq!(doc["jsonrpc"]["arguments"]["q"], "x");
        assert_eq!(doc["time"]["weekday"], "Monday");
        assert_eq!(doc["time"]["rfc3339"], "2026-11-23T14:05:00+01:00");
        assert_eq!(doc["time"]["date"], "2026-11-23");
        assert_eq!(doc["time"]["hour"], 14);
        assert_eq!(doc["time"]["timezone"], "Europe/Paris");
        assert_eq!(doc["request"]["body_parsed"], true);
    }
}

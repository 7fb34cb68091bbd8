//! When and how to try an upstream request again: transient failures only, idempotent requests only, with
//! exponential backoff and jitter inside a total deadline.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub deadline: Duration,
    pub max_body: u64,
    pub max_retry_after: Duration,
}

/// Why an attempt may be worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// No connection, or the connection failed before any response.
    Connection,
    /// 502, 503 or 504 from the upstream.
    Status(StatusCode),
    /// 429 with a Retry-After short enough to wait for.
    TooManyRequests(Duration),
}

impl RetryPolicy {
    /// Only methods that are safe to repeat, or requests the agent marked with `Idempotency-Key`.
    pub fn allows(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.attempts > 1
            && (matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
            ) || headers.contains_key("idempotency-key"))
    }

    /// Classifies a response status; `None` when it is final.
    pub fn transient_status(&self, status: StatusCode, headers: &HeaderMap) -> Option<Transient> {
        match status {
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                Some(Transient::Status(status))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = headers
                    .get(http::header::RETRY_AFTER)?
                    .to_str()
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()?;
                let wait = Duration::from_secs(wait);
                (wait <= self.max_retry_after).then_some(Transient::TooManyRequests(wait))
            }
            _ => None,
        }
    }

    /// The pause before attempt `next` (2 for the first retry): the upstream's Retry-After, or exponential
    /// backoff with jitter.
    pub fn delay(&self, next: u32, why: Transient) -> Duration {
        if let Transient::TooManyRequests(wait) = why {
            return wait;
        }
        let exp = self
            .base_delay
            .saturating_mul(1 << (next - 2).min(16))
            .min(self.max_delay);
        exp.mul_f64(0.5 + jitter() / 2.0)
    }
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            deadline: Duration::from_secs(5),
            max_body: 1024,
            max_retry_after: Duration::from_secs(2),
        }
    }

    #[test]
    fn idempotency_and_statuses() {
        let p = policy();
        let none = HeaderMap::new();
        assert!(p.allows(&Method::GET, &none));
        assert!(!p.allows(&Method::POST, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        assert!(p.allows(&Method::POST, &keyed));
        assert_eq!(
            p.transient_status(StatusCode::SERVICE_UNAVAILABLE, &none),
            Some(Transient::Status(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(p.transient_status(StatusCode::INTERNAL_SERVER_ERROR, &none), None);
        let mut short = HeaderMap::new();
        short.insert("retry-after", "1".parse().unwrap());
        assert_eq!(
            p.transient_status(StatusCode::TOO_MANY_REQUESTS, &short),
            Some(Transient::TooManyRequests(Duration::from_secs(1)))
        );
        let mut long = HeaderMap::new();
        long.insert("retry-after", "30".parse().unwrap());
        assert_eq!(
            p.transient_status(StatusCode::TOO_MANY_REQUESTS, &long),
            None,
            "too long to wait for"
        );
        assert_eq!(p.transient_status(StatusCode::TOO_MANY_REQUESTS, &none), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = policy();
        let d2 = p.delay(2, Transient::Connection);
        assert!(
            d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(100),
            "{d2:?}"
        );
        let d9 = p.delay(9, Transient::Connection);
        assert!(d9 <= Duration::from_millis(300), "{d9:?}");
        assert_eq!(
            p.delay(2, Transient::TooManyRequests(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }
}

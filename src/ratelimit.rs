//! Admission: rate limits with governor, per route (optionally per user the agent acts for) and agent-wide
//! across routes; and per-route caps on requests in flight.
//!
//! The key set is bounded. Keys at rest are evicted periodically, and once a limiter holds `max_keys` users,
//! any further new user shares one overflow bucket. A flood of distinct user ids therefore cannot grow memory;
//! it only makes those users share a quota.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// One configured limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Requests per `per`.
    pub rate: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
    pub per_user: bool,
    pub max_keys: usize,
}

/// Where a refusal came from: the route's own limit, or the agent-wide one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Route,
    Agent,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Agent => "agent",
        }
    }
}

#[derive(Debug)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

const OVERFLOW: &str = "\u{0}overflow";

/// One configured rate limit (a route's, or the agent-wide one) with its buckets.
pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    limit: Limit,
    /// When a full store last tried to evict (ms since `epoch`): at most one scan a second, so a flood of new
    /// users costs a map lookup each, not a scan each.
    last_eviction_ms: AtomicU64,
    epoch: Instant,
}

impl Limiter {
    pub fn new(limit: Limit) -> Self {
        let replenish = limit.per / limit.rate.get();
        let quota = Quota::with_period(replenish.max(Duration::from_nanos(1)))
            .expect("non-zero period")
            .allow_burst(limit.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            limit,
            last_eviction_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn check(&self, user: Option<&str>) -> Result<(), Duration> {
        let key = match (self.limit.per_user, user) {
            (true, Some(user)) => user,
            _ => "",
        };
        let mut key = key.to_string();
        if self.limit.per_user && self.limiter.len() >= self.limit.max_keys {
            let now = self.epoch.elapsed().as_millis() as u64;
            let last = self.last_eviction_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .last_eviction_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.limiter.retain_recent();
            }
            if self.limiter.len() >= self.limit.max_keys {
                key = OVERFLOW.to_string();
            }
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops keys whose buckets are full again; run periodically.
    pub fn evict(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently held.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// Takes one request from the route's bucket, then from the agent-wide one; on refusal, which limit it was
/// and how long until a request is let through.
pub fn admit(route: Option<&Limiter>, agent: Option<&Limiter>, user: Option<&str>) -> Result<(), Limited> {
    if let Some(limiter) = route {
        limiter.check(user).map_err(|wait| Limited {
            scope: Scope::Route,
            retry_after: wait,
        })?;
    }
    if let Some(limiter) = agent {
        limiter.check(user).map_err(|wait| Limited {
            scope: Scope::Agent,
            retry_after: wait,
        })?;
    }
    Ok(())
}

/// At most `max` requests of a route in flight; the rest wait up to `queue_timeout`.
pub struct Concurrency {
    slots: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
}

/// Why a request was not admitted by a concurrency cap.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}` has {max} requests in flight; waited {waited_ms} ms for a slot")]
pub struct Saturated {
    pub route: String,
    pub max: usize,
    pub waited_ms: u128,
}

impl Concurrency {
    pub fn new(max: u32, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max as usize)),
            max: max as usize,
            queue_timeout,
        }
    }

    /// A slot, held until the permit is dropped (with the response body, when the agent has it all).
    pub async fn acquire(&self, route: &str) -> Result<OwnedSemaphorePermit, Saturated> {
        let started = Instant::now();
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Saturated {
                route: route.to_string(),
                max: self.max,
                waited_ms: started.elapsed().as_millis(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_user: bool, max_keys: usize) -> Limit {
        let n = NonZeroU32::new(2).unwrap();
        Limit {
            rate: n,
            per: Duration::from_secs(60),
            burst: n,
            per_user,
            max_keys,
        }
    }

    #[test]
    fn burst_then_refusal_with_a_wait_and_independent_users() {
        let route = Limiter::new(limit(true, 100));
        assert!(admit(Some(&route), None, Some("alice")).is_ok());
        assert!(admit(Some(&route), None, Some("alice")).is_ok());
        let refused = admit(Some(&route), None, Some("alice")).unwrap_err();
        assert_eq!(refused.scope, Scope::Route);
        assert!(refused.retry_after > Duration::from_secs(25) && refused.retry_after <= Duration::from_secs(30));
        assert!(admit(Some(&route), None, Some("bob")).is_ok(), "bob has his own bucket");
        assert!(admit(None, None, Some("alice")).is_ok(), "unlimited route");
    }

    #[test]
    fn agent_wide_limit_spans_routes() {
        let (a, b, agent) = (
            Limiter::new(limit(false, 100)),
            Limiter::new(limit(false, 100)),
            Limiter::new(limit(false, 100)),
        );
        assert!(admit(Some(&a), Some(&agent), None).is_ok());
        assert!(admit(Some(&b), Some(&agent), None).is_ok());
        assert_eq!(admit(None, Some(&agent), None).unwrap_err().scope, Scope::Agent);
    }

    #[test]
    fn a_hundred_thousand_users_do_not_grow_the_key_set() {
        let route = Limiter::new(limit(true, 1000));
        for i in 0..100_000 {
            let _ = admit(Some(&route), None, Some(&format!("user-{i}")));
        }
        assert!(route.keys() <= 1001, "{} keys", route.keys());
        route.evict();
        assert!(route.keys() <= 1001);
    }
}

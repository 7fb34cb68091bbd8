//! One runtime object per route: everything a request on the route needs (its matching rules, limits,
//! rate limiter, in-flight cap, whether it is scrubbed, its scrubber and its metric handles), built once at start. The pipeline
//! gets an `Arc<RouteRuntime>` from the route table and never looks a route up by name again.
//!
//! It holds no secret value: scrubbers are built from the store's values when those change.

use std::time::Duration;

use crate::ratelimit::{Concurrency, Limiter};
use crate::route::Route;
use crate::telemetry::metrics::RouteMetrics;

use super::scrubbing::ScrubberSlot;

pub struct RouteRuntime {
    pub route: Route,
    pub limits: RouteLimits,
    pub rate: Option<Limiter>,
    pub concurrency: Option<Concurrency>,
    /// The route declares credentials: its responses are scrubbed, and asked for uncompressed.
    pub scrubbed: bool,
    pub(crate) scrubber: ScrubberSlot,
    pub metrics: RouteMetrics,
}

impl RouteRuntime {
    pub fn new(
        route: Route,
        limits: RouteLimits,
        rate: Option<Limiter>,
        scrubbed: bool,
        metrics: RouteMetrics,
    ) -> Self {
        let concurrency = limits.concurrency.map(|(max, queue)| Concurrency::new(max, queue));
        Self {
            metrics,
            route,
            limits,
            rate,
            concurrency,
            scrubbed,
            scrubber: ScrubberSlot::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.route.name
    }
}

impl AsRef<Route> for RouteRuntime {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// A route's reliability settings: upstream time limits, in-flight cap and retries.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
    pub response_headers: Option<Duration>,
    pub idle: Option<Duration>,
    /// `(max_in_flight, queue_timeout)`.
    pub concurrency: Option<(u32, Duration)>,
    pub retry: Option<crate::retry::RetryPolicy>,
}

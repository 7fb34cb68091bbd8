//! What Keyward tells operators: logs and Prometheus metrics. Only names, codes and counts go in; the types
//! that carry secret values have no way to be formatted into them.

pub mod logging;
pub mod metrics;

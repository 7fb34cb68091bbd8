//! Keyward: a sidecar egress proxy that lets AI agents call real APIs while holding only placeholder tokens.
//!
//! The library holds everything; `main.rs` is the command line. It is a library so that benchmarks (and any
//! embedding) reach the same code the binary runs.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
pub mod admin_token;
pub mod agent_env;
pub mod app;
pub mod cli;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod doctor;
pub mod exec;
pub mod fleet;
pub mod iptables;
pub mod killswitch;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod route;
pub mod scrub;
pub mod secrets;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod webhook;
pub mod yaml;

//! cloudlet-maintd: puts MobiledgeX/EdgeXR cloudlets into maintenance ahead of declared windows,
//! restores them afterwards, and verifies both.
//!
//! The library is a functional core (window files → plan) inside a thin imperative shell (the
//! commands in [`commands`]). `main.rs` only wires the command line to these modules.

pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod diag;
pub mod engine;
pub mod journal;
pub mod lead;
pub mod metrics;
pub mod plan;
pub mod reload;
pub mod status_http;
pub mod systemd;
pub mod timeline;
pub mod timeutil;
pub mod windows;

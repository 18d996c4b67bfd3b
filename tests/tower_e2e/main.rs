//! The `tower` feature: the layers on their own under a paused clock (`layers`), then end to
//! end over loopback with real tonic (`grpc`) and axum/hyper (`http`) stacks.
//!
//! Run with `cargo test --features tower --test tower_e2e`.

mod grpc;
mod http;
mod layers;

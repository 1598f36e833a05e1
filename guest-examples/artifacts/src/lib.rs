//! Paths of the guest plugin components, built once by this crate's build
//! script from `guest-examples/`, for tests and benches.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

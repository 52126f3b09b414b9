//! Placeholder: the stdio benchmark harness is being written.
fn main() {}

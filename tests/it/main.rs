//! The integration tests: one binary, one module per capability (each extra binary would re-link
//! the whole crate). Shared fixtures live in `common`.

mod common;

mod approval;
mod audit;
mod backup;
mod cli;
mod console;
mod delegation;
mod federation;
mod http_concurrency;
mod http_lifecycle;
mod http_security;
mod interop_python;
mod keystores;
mod known_answers;
mod layers;
mod mcp_conformance;
mod mcp_inspector;
mod mcp_python;
mod mcp_stdio;
mod no_key_material;
mod policy;
mod presentation;
mod rejections;
mod remote_trust;
mod replay;
mod replicas;
mod rotation;
mod signals;
mod storage;
mod untrusted_input;
mod verify_only;

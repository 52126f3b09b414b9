//! The verify-only library: built with `--no-default-features`, the crate offers offline
//! verification of the signed objects without any of the server's crates, and
//! `examples/verify_offline.rs` built that way decides on a token the real CLI signed.
//!
//! Both run cargo itself, with their own target directory (`target/verify-only`): the build
//! directory of the running test is locked by the cargo that runs it.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::hub::Installation;

const AGENT: &str = "agent://acme.example/reviewer";
const AUD: &str = "https://deploy.acme.example";

/// Crates the lean library must not pull in: MCP, HTTP server and client, CLI, policy engine,
/// SQLite, async runtime and the key stores.
const SERVER_CRATES: [&str; 13] = [
    "rmcp",
    "axum",
    "clap",
    "regorus",
    "rusqlite",
    "reqwest",
    "tokio",
    "keyring-core",
    "linux-keyutils",
    "linux-keyutils-keyring-store",
    "zbus-secret-service-keyring-store",
    "apple-native-keyring-store",
    "windows-native-keyring-store",
];

fn cargo(args: &[&str]) -> Output {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO"))
        .current_dir(manifest)
        .env("CARGO_TARGET_DIR", manifest.join("target/verify-only"))
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_lean_library_depends_on_none_of_the_server_crates() {
    let tree = cargo(&[
        "tree",
        "--locked",
        "--no-default-features",
        "--edges",
        "normal",
        "--prefix",
        "none",
    ]);
    let tree = String::from_utf8(tree.stdout).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.contains(&"fips204") && names.contains(&"ed25519-dalek"));
    let found: Vec<&&str> = SERVER_CRATES
        .iter()
        .filter(|name| names.contains(name))
        .collect();
    assert!(found.is_empty(), "the lean library depends on {found:?}");
}

/// Builds `examples/verify_offline.rs` with `--no-default-features` and returns its path.
fn lean_example() -> PathBuf {
    cargo(&[
        "build",
        "--locked",
        "--no-default-features",
        "--example",
        "verify_offline",
    ]);
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/verify-only/debug/examples/verify_offline")
}

#[test]
fn the_lean_example_verifies_a_cli_token_offline_and_refuses_a_revoked_one() {
    let example = lean_example();
    let installation = Installation::new(&[(AGENT, "hybrid")]);
    let files = installation.dir.parent().unwrap().to_owned();
    let write = |name: &str, text: &str| {
        let path = files.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let status: serde_json::Value = serde_json::from_str(&installation.cli(&["status"])).unwrap();
    let ca_id = status["ca_id"].as_str().unwrap().to_owned();
    let jwks = write("jwks.json", &installation.cli(&["jwks"]));
    let shown: serde_json::Value =
        serde_json::from_str(&installation.cli(&["cert", "show", AGENT])).unwrap();
    let cert = write("cert.jwt", shown["certificate"].as_str().unwrap());
    let signed = installation.cli(&[
        "token", "sign", "--agent", AGENT, "--action", "deploy", "--aud", AUD, "--arg", "repo=web",
    ]);
    let token = write("token.jwt", &signed);
    let crl = write("crl.jwt", &installation.cli(&["crl"]));
    let decide = |args: &str| {
        let out = Command::new(&example)
            .arg(&ca_id)
            .args([&jwks, &crl, &cert, &token])
            .args([AUD, "deploy", args])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };

    let (code, said) = decide(r#"{"repo":"web"}"#);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(said, format!("ALLOW {AGENT} to deploy for {AUD}"));

    let (code, said) = decide(r#"{"repo":"prod"}"#);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.starts_with("DENY (args_mismatch)"), "{said}");

    installation.cli(&["revoke", "token", &signed, "--reason", "leaked"]);
    std::fs::write(&crl, installation.cli(&["crl"])).unwrap();
    let (code, said) = decide(r#"{"repo":"web"}"#);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.starts_with("DENY (revoked)"), "{said}");
}

//! A revocation survives SIGKILL: a child process revokes a token and a certificate, reports
//! that `revoke` returned, and is killed at once (no clean shutdown, no WAL checkpoint); a new
//! process then finds both revocations. Runs without the libtest harness so the test binary can
//! re-execute itself as the child.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use agentseal::authority::{InitOptions, Installation, KeyChoice};
use agentseal::keystore::KeyStoreKind;
use agentseal::token::trust::RevokedKind;

const AGENT: &str = "agent://acme.example/doomed";

fn child(dir: &Path, jti: &str) {
    let installation = Installation::open(dir, KeyStoreKind::Auto).unwrap();
    installation.revoke_token(jti, "key leaked").unwrap();
    installation
        .revoke_certificate(AGENT, "key leaked")
        .unwrap();
    println!("revoked");
    // Wait to be killed; a clean exit would prove nothing.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

fn revocation_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let options = InitOptions {
        ca_id: None,
        keys: KeyChoice::Ed25519,
    };
    let installation = Installation::init(&dir, KeyStoreKind::Auto, &options).unwrap();
    installation
        .create_agent(AGENT, KeyChoice::Ed25519, Default::default(), None)
        .unwrap();
    let request =
        agentseal::token::action::ActionRequest::new("deploy", "svc", serde_json::json!({}));
    let signed = installation.sign_action(AGENT, &request).unwrap();
    drop(installation);

    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["child", dir.to_str().unwrap(), &signed.jti])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(process.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "revoked", "child failed before revoking");
    process.kill().unwrap(); // SIGKILL on Unix
    let status = process.wait().unwrap();
    assert!(
        !status.success(),
        "the child exited cleanly instead of being killed"
    );

    let reopened = Installation::open(&dir, KeyStoreKind::Auto).unwrap();
    let token = reopened
        .check_revocation(RevokedKind::Token, &signed.jti)
        .unwrap();
    assert!(token.revoked, "token revocation lost after SIGKILL");
    let cert = reopened
        .check_revocation(RevokedKind::Certificate, AGENT)
        .unwrap();
    assert!(cert.revoked, "certificate revocation lost after SIGKILL");
    let err = reopened
        .verify_token(&signed.token, &Default::default())
        .unwrap_err();
    assert_eq!(err.code(), "certificate_revoked");
    reopened.destroy().unwrap(); // leave no keys behind in the OS key store
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(Path::new(&args[2]), &args[3]);
        return;
    }
    // libtest's flags (--list, filters) are accepted and ignored: there is one test here.
    if args.iter().any(|a| a == "--list") {
        println!("revocation_survives_sigkill: test");
        return;
    }
    println!("running 1 test");
    revocation_survives_sigkill();
    println!("test revocation_survives_sigkill ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
}

//! What is acknowledged survives SIGKILL. A child process does the work, reports each
//! acknowledgement on stdout, and is killed (no clean shutdown, no WAL checkpoint, no flush); a
//! new process then looks for everything acknowledged:
//! - a revoked token and certificate (fsynced before acknowledgement);
//! - every audit record acknowledged during a burst of 1,000 concurrent audited calls, which
//!   share group commits that are not fsynced before acknowledgement, and a chain that still
//!   verifies.
//!
//! Runs without the libtest harness so the test binary can re-execute itself as the child.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use agentseal::audit::{AuditEvent, Decision};
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
        keys: KeyChoice::Ed25519,
        ..InitOptions::default()
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

/// Concurrent audited calls in the burst.
const BURST: usize = 1_000;
/// Acknowledgements the parent waits for before it kills the burst.
const KILL_AFTER: usize = 150;

/// The burst: `BURST` threads released at once, each signing an action and appending its audit
/// record as a front-end does, then printing the record's position and hash.
fn burst_child(dir: &Path) {
    let installation = Arc::new(Installation::open(dir, KeyStoreKind::Auto).unwrap());
    let start = Arc::new(Barrier::new(BURST));
    let threads: Vec<_> = (0..BURST)
        .map(|n| {
            let (installation, start) = (installation.clone(), start.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    start.wait();
                    let request = agentseal::token::action::ActionRequest::new(
                        "deploy",
                        "svc",
                        serde_json::json!({ "n": n }),
                    );
                    let signed = installation.sign_action(AGENT, &request).map(|s| s.jti);
                    let mut event = AuditEvent::new(AGENT, "test.sign_action", Decision::Allowed);
                    event.details.insert("n".into(), n.into());
                    if let Ok(jti) = &signed {
                        event.details.insert("jti".into(), jti.as_str().into());
                    }
                    if let Ok(jti) = installation.release(&event, signed) {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ack {n} {jti}");
                    }
                })
                .unwrap()
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    println!("done");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

fn audit_burst_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let options = InitOptions::default();
    let installation = Installation::init(&dir, KeyStoreKind::Auto, &options).unwrap();
    installation
        .create_agent(AGENT, KeyChoice::Ed25519, Default::default(), None)
        .unwrap();
    drop(installation);

    let mut process = Command::new(std::env::current_exe().unwrap())
        .args(["burst", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let mut acked = BTreeMap::new();
    let ack = |acked: &mut BTreeMap<u64, String>, line: String| {
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("ack"), "unexpected line {line:?}");
        let n: u64 = parts.next().unwrap().parse().unwrap();
        acked.insert(n, parts.next().unwrap().to_owned());
    };
    while acked.len() < KILL_AFTER {
        let line = lines.next().expect("the burst ended early").unwrap();
        ack(&mut acked, line);
    }
    process.kill().unwrap(); // SIGKILL on Unix
    assert!(!process.wait().unwrap().success());
    // Acknowledgements already in the pipe count too.
    let mut finished = false;
    for line in lines {
        let line = line.unwrap();
        if line == "done" {
            finished = true;
        } else {
            ack(&mut acked, line);
        }
    }
    assert!(
        !finished,
        "the burst finished before the kill: it proves nothing"
    );

    let reopened = Installation::open(&dir, KeyStoreKind::Auto).unwrap();
    let anchor = reopened.audit_anchor().unwrap().unwrap();
    let summary = reopened
        .verify_audit(&anchor, &Default::default())
        .unwrap()
        .expect("the audit chain verifies after SIGKILL");
    let mut recorded = BTreeMap::new();
    reopened
        .audit_records(1, &mut |record| {
            let body = record.parsed().unwrap();
            if let Some(n) = body.details.get("n").and_then(serde_json::Value::as_u64) {
                recorded.insert(n, body.details["jti"].as_str().unwrap_or("").to_owned());
            }
            true
        })
        .unwrap();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(n, jti)| recorded.get(n) != Some(jti))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged audit records lost to SIGKILL: {lost:?}"
    );
    eprintln!(
        "burst: {} acknowledged before the kill, {} recorded, chain of {} verifies",
        acked.len(),
        recorded.len(),
        summary.records
    );
    reopened.destroy().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child") => return child(Path::new(&args[2]), &args[3]),
        Some("burst") => return burst_child(Path::new(&args[2])),
        _ => {}
    }
    let tests: [(&str, fn()); 2] = [
        ("revocation_survives_sigkill", revocation_survives_sigkill),
        ("audit_burst_survives_sigkill", audit_burst_survives_sigkill),
    ];
    // libtest's flags are accepted; a filter picks tests by name.
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filter = args[1..].iter().find(|a| !a.starts_with('-'));
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.is_none_or(|f| name.contains(f.as_str())))
        .collect();
    println!("running {} tests", chosen.len());
    for (name, test) in &chosen {
        test();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
        chosen.len()
    );
}

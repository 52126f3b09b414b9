//! The operator console against a real hub: through a real browser (Debian's Chromium, headless,
//! driven by Selenium from the venv: `tools/interop/console_browser.py`) and, for each security
//! check on its own, over plain HTTP. Pending approvals are made by MCP calls of an agent whose
//! client cannot ask a person; the agent's next call shows what the console decided.
#![cfg(target_os = "linux")]

use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::hub::{Hub, Installation, call_tool};
use crate::common::python::{python, repo, run};

use crate::approval::{BANK, PAYER, POLICY, assert_refund_verifies};

struct Console {
    installation: Installation,
    hub: Hub,
    payer: String,
}

fn console() -> Console {
    let installation = Installation::new(&[(PAYER, "hybrid"), (BANK, "ed25519")]);
    std::fs::write(installation.dir.join("policy.rego"), POLICY).unwrap();
    let hub = installation.serve(&[]);
    let payer = installation.access_token(&hub, PAYER, &[]);
    Console {
        installation,
        hub,
        payer,
    }
}

/// The agent asks to sign a refund of `amount`; the structured answer.
async fn refund(c: &Console, amount: i64, approval_id: Option<&str>) -> Value {
    let mut arguments = json!({
        "action": "payments.refund",
        "audience": BANK,
        "arguments": {"order": "o-7", "amount": amount},
    });
    if let Some(id) = approval_id {
        arguments["approval_id"] = json!(id);
    }
    let answer = call_tool(&c.hub, Some(&c.payer), "sign_action", arguments).await;
    answer.message()["result"]["structuredContent"].clone()
}

async fn pending(c: &Console, amount: i64) -> String {
    let answer = refund(c, amount, None).await;
    assert_eq!(answer["reasons"], json!(["approval_pending"]), "{answer}");
    answer["approval_id"].as_str().unwrap().to_owned()
}

fn login_link(c: &Console) -> String {
    c.installation.cli(&["console", "login"])
}

/// A client that keeps no cookies and follows no redirects: each check sees the hub's answer.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with a fresh link: the session cookie (`name=value`).
async fn sign_in(c: &Console) -> String {
    let link = login_link(c);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let answer = client()
        .post(format!("{}/console/login", c.hub.url))
        .header("origin", &c.hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    // `__Host-`: Secure, Path=/, set by this host only; browsers take Secure on loopback too.
    assert!(cookie.starts_with("__Host-agentseal_console="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/;", "Secure"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the page at `path`, as its forms carry it.
async fn csrf(c: &Console, cookie: &str, path: &str) -> String {
    let page = client()
        .get(format!("{}{path}", c.hub.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in {page}"))
        .to_owned()
}

async fn post(
    c: &Console,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    form: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut request = client()
        .post(format!("{}{path}", c.hub.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let answer = request.send().await.unwrap();
    let (status, headers) = (answer.status(), answer.headers().clone());
    (status, headers, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_decides_in_a_real_browser_and_the_agent_gets_exactly_that() {
    let c = console();
    let approve = pending(&c, 120).await;
    let deny = pending(&c, 9_000).await;
    let shots = match std::env::var_os("AGENTSEAL_CONSOLE_SCREENSHOTS") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("agentseal-console-{}", std::process::id())),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let out = run(Command::new(python())
        .arg(repo().join("tools/interop/console_browser.py"))
        .args(["--hub", &c.hub.url, "--link", &login_link(&c)])
        .args(["--approve", &approve, "--deny", &deny, "--agent", PAYER])
        .arg("--shots")
        .arg(&shots));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Without a session, the console is the sign-in page.
    assert_eq!(report["unsigned_lands_on"], "/console/login", "{report}");
    // Signed in: both waiting, each with its arguments in full.
    let shown = report["pending_shown"].as_array().unwrap();
    for id in [&approve, &deny] {
        assert!(shown.contains(&json!(format!("approval-{id}"))), "{report}");
    }
    assert_eq!(
        report["arguments_shown"],
        json!({"order": "o-7", "amount": 120})
    );
    // The form posted from another origin was refused, and decided nothing.
    assert!(
        report["cross_site_answer"]
            .as_str()
            .unwrap()
            .contains("did not come from the console"),
        "{report}"
    );
    assert_eq!(report["pending_after"], json!([]), "{report}");
    assert_eq!(report["phone_overflows"], false, "{report}");
    for page in [
        "login",
        "approvals",
        "agents",
        "revocations",
        "audit",
        "agents-phone",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}");
    }

    // The agent asks again: the approved request gets its token, which verifies; the denied
    // one is told so, with the person's reason.
    let signed = refund(&c, 120, Some(&approve)).await;
    assert_refund_verifies(&c.installation, &signed, r#"{"order":"o-7","amount":120}"#);
    let refused = refund(&c, 9_000, Some(&deny)).await;
    assert_eq!(refused["reasons"], json!(["approval_denied"]), "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not this customer")
    );
    // Who decided is in the audit log.
    let audit = c
        .installation
        .cli(&["audit", "export", "--actor", "operator"]);
    let decided: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"].clone())
        .filter(|r| r["op"] == "console.approve" || r["op"] == "console.deny")
        .collect();
    assert_eq!(decided.len(), 2, "{audit}");
    assert!(
        decided
            .iter()
            .all(|r| r["details"]["by"].as_str().unwrap().contains("operator"))
    );
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("agentseal-console-{}", std::process::id())),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_operators_session_from_the_console_itself_changes_anything() {
    let c = console();
    let id = pending(&c, 50).await;
    let approve = format!("/console/approvals/{id}/approve");
    // An agent's access token is no way in.
    let answer = client()
        .get(format!("{}/console/approvals", c.hub.url))
        .bearer_auth(&c.payer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/console/login");
    let (status, _, _) = post(&c, &approve, None, Some(&c.hub.url), "csrf=x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Every page says what the browser may do with it.
    let page = client()
        .get(format!("{}/console/login", c.hub.url))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");

    let cookie = sign_in(&c).await;
    let token = csrf(&c, &cookie, "/console/approvals").await;
    let form = format!("csrf={token}");
    // Another origin, even with the session and its token: refused.
    let (status, _, body) = post(
        &c,
        &approve,
        Some(&cookie),
        Some("http://127.0.0.1:1"),
        &form,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // No Origin at all: refused.
    let (status, _, _) = post(&c, &approve, Some(&cookie), None, &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The right origin, but the browser says the request crossed sites: refused.
    let answer = client()
        .post(format!("{}{approve}", c.hub.url))
        .header("cookie", &cookie)
        .header("origin", &c.hub.url)
        .header("sec-fetch-site", "same-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(answer.text().await.unwrap().contains("Sec-Fetch-Site"));
    // A host the hub does not answer to (DNS rebinding): refused.
    let answer = client()
        .post(format!("{}{approve}", c.hub.url))
        .header("host", "attacker.example")
        .header("cookie", &cookie)
        .header("origin", &c.hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    // The right origin without the session's token: refused.
    let (status, _, body) = post(&c, &approve, Some(&cookie), Some(&c.hub.url), "csrf=guess").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(c.installation.cli(&["approvals", "list"]).contains(&id));
    // All three right: decided.
    let (status, headers, _) = post(&c, &approve, Some(&cookie), Some(&c.hub.url), &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/console/approvals");
    let listed: Value =
        serde_json::from_str(&c.installation.cli(&["approvals", "list", "--all"])).unwrap();
    assert_eq!(listed["approvals"][0]["status"], "approved", "{listed}");

    // A login link works once.
    let link = login_link(&c);
    let token = link.split("token=").nth(1).unwrap();
    let form = format!("token={token}");
    let (status, _, _) = post(&c, "/console/login", None, Some(&c.hub.url), &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, body) = post(&c, "/console/login", None, Some(&c.hub.url), &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("used already"), "{body}");
    // Signing out ends the session.
    let token = csrf(&c, &cookie, "/console/agents").await;
    let (status, _, _) = post(
        &c,
        "/console/logout",
        Some(&cookie),
        Some(&c.hub.url),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let answer = client()
        .get(format!("{}/console/agents", c.hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_revokes_a_certificate_and_the_agent_is_cut_off() {
    let c = console();
    let cookie = sign_in(&c).await;
    let token = csrf(&c, &cookie, "/console/agents").await;
    let shown: Value = serde_json::from_str(&c.installation.cli(&["cert", "show", PAYER])).unwrap();
    let serial = shown["claims"]["jti"].as_str().unwrap().to_owned();
    let (status, _, body) = post(
        &c,
        "/console/agents/revoke",
        Some(&cookie),
        Some(&c.hub.url),
        &format!("csrf={token}&serial={serial}&reason=laptop%20stolen"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let answer = call_tool(&c.hub, Some(&c.payer), "whoami", json!({})).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    let page = client()
        .get(format!("{}/console/revocations", c.hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&serial) && page.contains("laptop stolen"),
        "{page}"
    );
}

//! Workload identity federation against real parts: a hub process on 127.0.0.1, a workload issuer
//! started by the test (`tools/interop/workload_issuer.py`: its own RSA and EC keys, its JWKS
//! served on 127.0.0.1, tokens minted by PyJWT as a Kubernetes API server or GitHub Actions
//! would), the official Python MCP SDK as the agent's client, and the Prometheus project's
//! OpenMetrics parser reading `/metrics`. Each refusal names the check whose removal makes it
//! fail.
#![cfg(target_os = "linux")]

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::hub::{Hub, Installation, call_tool, structured};
use crate::common::python::{python, repo, run_ok};
use crate::signals::Receiver;

const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
const BILLING: &str = "agent://k8s/prod/billing";
const DEPLOYER: &str = "agent://ci.example/deployer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

fn now() -> i64 {
    crate::common::now()
}

/// The test's workload issuer, stopped on drop.
struct Issuer {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Issuer {
    fn start() -> Issuer {
        let mut child = Command::new(python())
            .arg(repo().join("tools/interop/workload_issuer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the workload issuer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("issuer said {line:?}"))
            .trim()
            .to_owned();
        Issuer {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// A token with `claims`, signed with `alg` (RS256 or ES256); `forged` signs with a key the
    /// JWKS does not hold, under a published kid.
    async fn mint(&self, alg: &str, claims: &Value, forged: bool) -> String {
        self.http
            .post(format!("{}/mint", self.url))
            .json(&json!({"alg": alg, "claims": claims, "forged": forged}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn set_down(&self, down: bool) {
        let path = if down { "down" } else { "up" };
        self.http
            .post(format!("{}/{path}", self.url))
            .send()
            .await
            .unwrap();
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Claims of a Kubernetes projected service-account token for the hub, valid `lifetime` s.
fn k8s_claims(hub: &Hub, namespace: &str, account: &str, lifetime: i64) -> Value {
    let now = now();
    json!({
        "aud": [hub.url],
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "iss": K8S_ISSUER,
        "jti": format!("{namespace}-{account}-{}", rand_suffix()),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": format!("{account}-7c9d"), "uid": "0d3f"},
            "serviceaccount": {"name": account, "uid": "a1b2"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
    })
}

fn rand_suffix() -> String {
    agentseal::clock::random_id().unwrap()
}

/// A fresh installation with the agents, a hub, and the issuer trusted under rule `k8s`
/// (subjects `system:serviceaccount:prod:*`, agent from namespace and account name).
struct Fleet {
    installation: Installation,
    hub: Hub,
    issuer: Issuer,
}

impl Fleet {
    fn start(hub_flags: &[&str], rule_flags: &[&str]) -> Fleet {
        let installation = Installation::new(&[(BILLING, "hybrid"), (DEPLOYER, "ed25519")]);
        let hub = installation.serve(hub_flags);
        let issuer = Issuer::start();
        let jwks = issuer.jwks_url();
        let mut args = vec![
            "federation",
            "trust",
            "k8s",
            "--issuer",
            K8S_ISSUER,
            "--jwks-url",
            &jwks,
            "--subject",
            "system:serviceaccount:prod:*",
            "--agent",
            "agent://k8s/{/kubernetes.io/namespace}/{/kubernetes.io/serviceaccount/name}",
        ];
        args.extend_from_slice(rule_flags);
        let rule: Value = serde_json::from_str(&installation.cli(&args)).unwrap();
        // Without --audience, the rule takes the URL the hub runs at.
        assert_eq!(rule["audience"], hub.url, "{rule}");
        Fleet {
            installation,
            hub,
            issuer,
        }
    }
}

/// Posts a token request; its status and JSON body.
async fn token_request(
    hub: &Hub,
    form: &[(&str, &str)],
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", hub.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

async fn exchange(hub: &Hub, assertion: &str) -> (StatusCode, Value) {
    let (status, body, _) = token_request(
        hub,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", assertion),
            ("subject_token_type", JWT_TYPE),
        ],
    )
    .await;
    (status, body)
}

/// Asserts an OAuth refusal with `error` and reason `reason`.
fn assert_refused(answer: &(StatusCode, Value), status: StatusCode, error: &str, reason: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_token_lets_the_python_sdk_act_as_the_mapped_agent_after_discovery() {
    let fleet = Fleet::start(&[], &[]);
    // The platform's token, where Kubernetes projects it into the pod.
    let claims = k8s_claims(&fleet.hub, "prod", "billing", 600);
    let token = fleet.issuer.mint("RS256", &claims, false).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let out = run_ok(
        Command::new(python())
            .arg(repo().join("examples/python/workload_agent.py"))
            .args(["--hub", &fleet.hub.url, "--token-file"])
            .arg(&token_file)
            .args(["--action", "deploy", "--audience", "https://ci.example.com"]),
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    // Discovery: 401 → protected resource metadata → authorization server metadata.
    let discovery = &report["discovery"];
    assert_eq!(discovery["issuer"], fleet.hub.url, "{report}");
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/oauth/token", fleet.hub.url)
    );
    assert_eq!(discovery["resource"], fleet.hub.mcp_url());
    // The access token: a Bearer token no longer lived than the assertion.
    let issued = &report["access_token"];
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(
        issued["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(issued["expires_in"].as_i64().unwrap() <= 600, "{issued}");
    // whoami and sign_action as the agent the rule maps the service account to.
    assert_eq!(report["whoami"]["agent_id"], BILLING, "{report}");
    let action_token = report["action_token"].as_str().unwrap();
    let verified: Value = serde_json::from_str(&fleet.installation.cli(&[
        "verify",
        action_token,
        "--aud",
        "https://ci.example.com",
        "--action",
        "deploy",
        "--args-json",
        r#"{"ref":"main"}"#,
    ]))
    .unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["claims"]["iss"], BILLING);
    // The same assertion again (a restarted pod reusing its token) is a replay.
    assert_refused(
        &exchange(&fleet.hub, &token).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "replayed",
    );
    // The SDK's own OAuth client (client credentials with the JWT as client assertion, the MCP
    // client credentials extension) finds the hub from the 401 and does the exchange itself.
    let claims = k8s_claims(&fleet.hub, "prod", "billing", 600);
    std::fs::write(
        &token_file,
        fleet.issuer.mint("ES256", &claims, false).await,
    )
    .unwrap();
    let out = run_ok(
        Command::new(python())
            .arg(repo().join("examples/python/workload_agent.py"))
            .args(["--hub", &fleet.hub.url, "--sdk-oauth", "--token-file"])
            .arg(&token_file)
            .args(["--action", "deploy", "--audience", "https://ci.example.com"]),
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["whoami"]["agent_id"], BILLING, "{report}");
    assert!(report["action_token"].is_string(), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_es256_token_is_exchanged_with_the_jwt_bearer_grant_within_its_scopes_and_lifetime() {
    let fleet = Fleet::start(&["--log-format", "json"], &["--max-ttl", "30m"]);
    let receiver = Receiver::start(true).await;
    fleet
        .installation
        .cli(&["signals", "webhook", &receiver.url]);
    let mut claims = k8s_claims(&fleet.hub, "prod", "billing", 120);
    // A GitHub-style audience string naming the hub by its MCP URL also names it.
    claims["aud"] = json!(fleet.hub.url);
    let assertion = fleet.issuer.mint("ES256", &claims, false).await;
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", fleet.hub.url))
        .header("x-request-id", "req-federation-1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
                ("scope", "agentseal:verify"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-federation-1");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.status(), StatusCode::OK);
    let issued: Value = response.json().await.unwrap();
    assert_eq!(issued["scope"], "agentseal:verify", "{issued}");
    assert!(issued.get("issued_token_type").is_none(), "{issued}");
    // Never longer than the assertion's remaining 120 s, though the rule allows 30 min.
    let expires_in = issued["expires_in"].as_i64().unwrap();
    assert!((1..=120).contains(&expires_in), "{issued}");
    let access = issued["access_token"].as_str().unwrap();
    let who = structured(&call_tool(&fleet.hub, Some(access), "whoami", json!({})).await);
    assert_eq!(who["agent_id"], BILLING);
    // The scope asked for is all it got: signing needs agentseal:sign.
    let sign = call_tool(
        &fleet.hub,
        Some(access),
        "sign_action",
        json!({"action": "deploy", "audience": "https://ci.example.com"}),
    )
    .await;
    assert_eq!(sign.status, StatusCode::FORBIDDEN, "{}", sign.body);
    // Every line the hub logged for the request carries its id (JSON logs).
    let log = fleet.hub.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["span"]["request_id"] == "req-federation-1")
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "access token issued to a workload"),
        "{log}"
    );
    // The issuance is in the audit log, with who it was for and through which rule.
    let audit = fleet
        .installation
        .cli(&["audit", "export", "--actor", BILLING]);
    let record = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["record"]["op"] == "oauth.token")
        .unwrap_or_else(|| panic!("no oauth.token record: {audit}"));
    assert_eq!(record["record"]["decision"], "allowed");
    assert_eq!(record["record"]["details"]["rule"], "k8s");
    assert_eq!(record["record"]["details"]["grant_type"], "jwt_bearer");
    assert!(!audit.contains(&assertion) && !audit.contains(access));
    // And signalled.
    let got = receiver
        .wait_until("workload.token_issued", |d| {
            d.iter()
                .any(|d| d.payload()["type"] == "workload.token_issued")
        })
        .await;
    let signal = got
        .iter()
        .map(|d| d.payload())
        .find(|p| p["type"] == "workload.token_issued")
        .unwrap();
    assert_eq!(signal["data"]["agent_id"], BILLING, "{signal}");
    assert!(!signal.to_string().contains(access));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_assertions_name_their_reason_and_are_audited() {
    let fleet = Fleet::start(&[], &["--scope", "agentseal:verify agentseal:sign"]);
    let hub = &fleet.hub;
    let issuer = &fleet.issuer;
    let good = || k8s_claims(hub, "prod", "billing", 300);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good();
        change(&mut claims);
        claims
    };
    let cases: Vec<(&str, Value, bool, &str)> = vec![
        (
            "an issuer no rule trusts",
            with(&|c| c["iss"] = json!("https://evil.example")),
            false,
            "unknown_issuer",
        ),
        (
            "a signature by a key not in the JWKS",
            good(),
            true,
            "bad_signature",
        ),
        (
            "an audience that is not this hub",
            with(&|c| c["aud"] = json!(["https://vault.example"])),
            false,
            "wrong_audience",
        ),
        (
            "an expired assertion",
            with(&|c| {
                c["iat"] = json!(now() - 900);
                c["nbf"] = json!(now() - 900);
                c["exp"] = json!(now() - 300);
            }),
            false,
            "expired",
        ),
        (
            "a subject outside the pattern",
            with(&|c| c["sub"] = json!("system:serviceaccount:staging:billing")),
            false,
            "subject_not_allowed",
        ),
        (
            "a lifetime past the cap",
            with(&|c| c["exp"] = json!(now() + 2 * 86_400)),
            false,
            "lifetime_too_long",
        ),
        (
            "a claim the agent template cannot use",
            with(&|c| c["kubernetes.io"]["serviceaccount"]["name"] = json!("../admin")),
            false,
            "unmapped_subject",
        ),
        (
            "an agent the installation does not have",
            with(&|c| c["kubernetes.io"]["serviceaccount"]["name"] = json!("nobody")),
            false,
            "unknown_agent",
        ),
    ];
    for (what, claims, forged, reason) in &cases {
        let assertion = issuer.mint("RS256", claims, *forged).await;
        let answer = exchange(hub, &assertion).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{what}: {}", answer.1);
        assert_eq!(answer.1["error"], "invalid_grant", "{what}: {}", answer.1);
        assert_eq!(answer.1["reason"], *reason, "{what}: {}", answer.1);
    }
    // A scope the rule does not grant.
    let assertion = issuer.mint("RS256", &good(), false).await;
    let (status, body, _) = token_request(
        hub,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &assertion),
            ("scope", "agentseal:verify agentseal:revoke"),
        ],
    )
    .await;
    assert_refused(
        &(status, body),
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        "scope_exceeded",
    );
    // Refused for its scope, the assertion was not used up: asking within the rule works.
    let (status, body, _) = token_request(
        hub,
        &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "agentseal:sign agentseal:verify");
    // Replayed, through the other grant.
    assert_refused(
        &exchange(hub, &assertion).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "replayed",
    );
    // Client credentials with the JWT as client assertion: the client id must be its subject.
    let assertion = issuer.mint("RS256", &good(), false).await;
    let (status, body, _) = token_request(
        hub,
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
            ("client_id", "system:serviceaccount:prod:other"),
        ],
    )
    .await;
    assert_refused(
        &(status, body),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client_mismatch",
    );
    // A revoked agent gets nothing.
    fleet
        .installation
        .cli(&["revoke", "cert", BILLING, "--reason", "compromised"]);
    let assertion = issuer.mint("RS256", &good(), false).await;
    assert_refused(
        &exchange(hub, &assertion).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "unknown_agent",
    );
    // Requests that are not token requests at all.
    let (status, body, _) = token_request(hub, &[("grant_type", "password")]).await;
    assert_refused(
        &(status, body),
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        "unsupported_grant_type",
    );
    let (status, body, _) = token_request(
        hub,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", "not-a-jwt"),
            ("resource", "https://elsewhere.example/mcp"),
        ],
    )
    .await;
    assert_refused(
        &(status, body),
        StatusCode::BAD_REQUEST,
        "invalid_target",
        "invalid_target",
    );
    // Every refusal of a parsable assertion is in the audit log with its reason.
    let audit = fleet.installation.cli(&["audit", "export"]);
    let reasons: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["record"]["op"] == "oauth.token" && r["record"]["decision"] == "denied")
        .map(|r| r["record"]["reasons"][0].as_str().unwrap().to_owned())
        .collect();
    for (_, _, _, reason) in &cases {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
    assert!(reasons.iter().any(|r| r == "replayed"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "scope_exceeded"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_anyone_can_cause_are_answered_but_recorded_only_so_often() {
    let installation = Installation::new(&[(DEPLOYER, "ed25519")]);
    let hub = installation.serve(&[]);
    let issuer = Issuer::start();
    let mut claims = k8s_claims(&hub, "prod", "billing", 300);
    claims["iss"] = json!("https://flood.example");
    let flood = issuer.mint("RS256", &claims, false).await;
    for _ in 0..75 {
        let answer = exchange(&hub, &flood).await;
        assert_eq!(answer.1["reason"], "unknown_issuer", "{}", answer.1);
    }
    let audit = installation.cli(&["audit", "export", "--actor", "anonymous"]);
    let recorded: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["record"]["details"]["claimed_issuer"] == "https://flood.example")
        .collect();
    // At most a minute's allowance; the rest are counted in metrics and logged only.
    assert!(
        (1..=60).contains(&recorded.len()),
        "{} records of 75 refusals",
        recorded.len()
    );
    // What the caller claimed is recorded as claimed, by no agent.
    let details = &recorded[0]["record"]["details"];
    assert!(details.get("issuer").is_none(), "{details}");
    assert_eq!(recorded[0]["record"]["actor"], "anonymous");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_whose_keys_cannot_be_fetched_past_the_grace_is_refused() {
    let fleet = Fleet::start(&[], &["--jwks-refresh", "1s", "--jwks-grace", "2s"]);
    let mint = || async {
        let claims = k8s_claims(&fleet.hub, "prod", "billing", 300);
        fleet.issuer.mint("RS256", &claims, false).await
    };
    assert_eq!(exchange(&fleet.hub, &mint().await).await.0, StatusCode::OK);
    fleet.issuer.set_down(true).await;
    // Past the refresh, within the grace: the keys fetched before still serve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = exchange(&fleet.hub, &mint().await).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    // Past refresh + grace with the JWKS still unreachable: refused, fail closed.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (status, body, headers) = token_request(
        &fleet.hub,
        &[("grant_type", JWT_BEARER), ("assertion", &mint().await)],
    )
    .await;
    assert_refused(
        &(status, body),
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "issuer_keys_unavailable",
    );
    // Not sooner than the hub would fetch again.
    assert_eq!(headers["retry-after"], "10");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_actions_rule_with_a_fixed_agent_and_a_jwks_file() {
    let installation = Installation::new(&[(DEPLOYER, "ed25519")]);
    let hub = installation.serve(&[]);
    let issuer = Issuer::start();
    let jwks = reqwest::get(issuer.jwks_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    installation.cli(&[
        "federation",
        "trust",
        "github",
        "--issuer",
        GITHUB_ISSUER,
        "--jwks-file",
        file.to_str().unwrap(),
        "--subject",
        "repo:acme/api:ref:refs/heads/*",
        "--agent",
        DEPLOYER,
        "--scope",
        "agentseal:sign",
        "--claim",
        "repository_owner_id=4242",
    ]);
    let listed: Value = serde_json::from_str(&installation.cli(&["federation", "list"])).unwrap();
    assert_eq!(listed["rules"][0]["name"], "github", "{listed}");
    assert_eq!(
        listed["rules"][0]["keys"]["inline"]["kids"],
        json!(["rsa-1", "ec-1"])
    );
    let now = now();
    let job = |sub: &str| {
        json!({
            "iss": GITHUB_ISSUER,
            "aud": hub.url,
            "sub": sub,
            "repository": "acme/api",
            "repository_owner_id": 4242,
            "ref": "refs/heads/main",
            "jti": rand_suffix(),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    };
    let mut tokens = Vec::new();
    for sub in [
        "repo:acme/api:ref:refs/heads/main",
        "repo:acme/web:ref:refs/heads/main",
        "repo:acme/api:pull_request",
    ] {
        tokens.push(issuer.mint("RS256", &job(sub), false).await);
    }
    // The right branch of a repository of the same name under another owner (re-registered
    // after a rename): the pinned owner id tells them apart.
    let mut other_owner = job("repo:acme/api:ref:refs/heads/main");
    other_owner["repository_owner_id"] = json!(9999);
    let other_owner = issuer.mint("RS256", &other_owner, false).await;
    // The issuer is gone: a JWKS file needs no fetch.
    drop(issuer);
    let (status, body) = exchange(&hub, &tokens[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "agentseal:sign");
    assert_refused(
        &exchange(&hub, &other_owner).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "claim_mismatch",
    );
    // Another repository, and a pull request, are outside the branch pattern.
    for token in &tokens[1..] {
        assert_refused(
            &exchange(&hub, token).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject_not_allowed",
        );
    }
    installation.cli(&["federation", "remove", "github"]);
    let listed: Value = serde_json::from_str(&installation.cli(&["federation", "list"])).unwrap();
    assert_eq!(listed["rules"], json!([]));
    assert!(
        !crate::common::hub::cli_output(&installation.dir, &["federation", "remove", "github"])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_documents_lead_a_client_from_the_mcp_endpoint_to_the_token_endpoint() {
    let installation = Installation::new(&[(DEPLOYER, "ed25519")]);
    let hub = installation.serve(&[]);
    let client = reqwest::Client::new();
    let probe = client
        .post(hub.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::UNAUTHORIZED);
    let challenge = probe.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let metadata_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{challenge}"));
    let resource: Value = client
        .get(metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resource["resource"], hub.mcp_url());
    let issuer = resource["authorization_servers"][0].as_str().unwrap();
    assert_eq!(issuer, hub.url);
    // RFC 8414 §3: the metadata is at the issuer's well-known URL, and names the same issuer.
    let server: Value = client
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["issuer"], issuer);
    assert_eq!(server["token_endpoint"], format!("{issuer}/oauth/token"));
    for grant in [TOKEN_EXCHANGE, JWT_BEARER, "client_credentials"] {
        assert!(
            server["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(grant)),
            "{server}"
        );
    }
    assert_eq!(
        server["token_endpoint_auth_methods_supported"],
        json!(["none", "private_key_jwt"])
    );
    assert_eq!(
        server["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json")
    );
    // There is no interactive login, and the authorization endpoint says so.
    let login = client
        .get(server["authorization_endpoint"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::BAD_REQUEST);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_response_type");
    assert_eq!(server["scopes_supported"], resource["scopes_supported"]);
    // The token endpoint takes only forms, and answers OAuth errors in JSON.
    let wrong = client
        .post(format!("{issuer}/oauth/token"))
        .json(&json!({"grant_type": JWT_BEARER}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    let huge = client
        .post(format!("{issuer}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("assertion={}", "A".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

/// The families of an OpenMetrics text as the Prometheus project's parser reads it:
/// `{family: {sample name + labels: value}}`.
fn parse_metrics(text: &str) -> Value {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    samples = out.setdefault(family.name, {})
    for s in family.samples:
        key = s.name + json.dumps(dict(sorted(s.labels.items())), sort_keys=True)
        samples[key] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(metrics: &Value, family: &str, key: &str) -> f64 {
    metrics[family][key].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_and_count_the_calls_made() {
    let fleet = Fleet::start(&["--metrics", "127.0.0.1:0"], &[]);
    let log = fleet.hub.log();
    let metrics_url = log
        .lines()
        .find_map(|l| l.strip_prefix("agentseal: metrics at "))
        .unwrap_or_else(|| panic!("no metrics address in {log}"))
        .trim()
        .to_owned();
    let scrape = || async {
        let response = reqwest::get(&metrics_url).await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
        );
        parse_metrics(&response.text().await.unwrap())
    };
    let before = scrape().await;
    let assertion = fleet
        .issuer
        .mint(
            "RS256",
            &k8s_claims(&fleet.hub, "prod", "billing", 300),
            false,
        )
        .await;
    let (status, body) = exchange(&fleet.hub, &assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap();
    for _ in 0..3 {
        structured(&call_tool(&fleet.hub, Some(access), "whoami", json!({})).await);
    }
    let signed = structured(
        &call_tool(
            &fleet.hub,
            Some(access),
            "sign_action",
            json!({"action": "deploy", "audience": "https://ci.example.com"}),
        )
        .await,
    );
    let token = signed["token"].as_str().unwrap();
    call_tool(
        &fleet.hub,
        Some(access),
        "revoke",
        json!({"token": token, "reason": "test"}),
    )
    .await;
    let replayed = exchange(&fleet.hub, &assertion).await;
    assert_eq!(replayed.1["reason"], "replayed");
    // An access token that does not verify.
    call_tool(&fleet.hub, Some("not.a.token"), "whoami", json!({})).await;
    let after = scrape().await;
    let grew = |family: &str, key: &str, by: f64| {
        let (was, is) = (sample(&before, family, key), sample(&after, family, key));
        assert!(is - was >= by, "{family} {key}: {was} -> {is}\n{after:#}");
    };
    grew(
        "agentseal_tool_calls",
        r#"agentseal_tool_calls_total{"outcome": "ok", "tool": "whoami"}"#,
        3.0,
    );
    grew(
        "agentseal_tool_calls",
        r#"agentseal_tool_calls_total{"outcome": "ok", "tool": "sign_action"}"#,
        1.0,
    );
    grew(
        "agentseal_tool_call_seconds",
        r#"agentseal_tool_call_seconds_count{"tool": "whoami"}"#,
        3.0,
    );
    grew(
        "agentseal_access_tokens",
        r#"agentseal_access_tokens_total{"grant": "token_exchange", "outcome": "issued"}"#,
        1.0,
    );
    grew(
        "agentseal_access_tokens",
        r#"agentseal_access_tokens_total{"grant": "token_exchange", "outcome": "replayed"}"#,
        1.0,
    );
    grew(
        "agentseal_revocations",
        r#"agentseal_revocations_total{"kind": "token"}"#,
        1.0,
    );
    grew(
        "agentseal_verification_failures",
        r#"agentseal_verification_failures_total{"reason": "malformed"}"#,
        1.0,
    );
    grew(
        "agentseal_database_commit_seconds",
        r#"agentseal_database_commit_seconds_count{"engine": "sqlite"}"#,
        1.0,
    );
    assert!(after["agentseal_open_sessions"].is_object(), "{after:#}");
    assert!(after["agentseal_outbox_depth"].is_object(), "{after:#}");
    // Nothing secret is exposed.
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(access) && !text.contains(&assertion));
}

#[tokio::test(flavor = "multi_thread")]
async fn access_tokens_default_to_the_url_the_hub_runs_at_and_say_so() {
    let installation = Installation::new(&[(DEPLOYER, "ed25519")]);
    let hub = installation.serve(&[]);
    let out = crate::common::hub::cli_output(
        &installation.dir,
        &["access-token", "issue", "--agent", DEPLOYER],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&hub.mcp_url()), "{stderr}");
    let token = String::from_utf8(out.stdout).unwrap();
    let who = structured(&call_tool(&hub, Some(token.trim()), "whoami", json!({})).await);
    assert_eq!(who["agent_id"], DEPLOYER);
    // A certificate from a hybrid CA (the default) is printed as the JSON object it is.
    let hybrid = Installation::empty();
    hybrid.cli(&["init"]);
    let created: Value = serde_json::from_str(&hybrid.cli(&[
        "agent",
        "create",
        "agent://acme.example/hybrid",
        "--alg",
        "hybrid",
    ]))
    .unwrap();
    assert!(
        created["certificate"]["signatures"]
            .as_array()
            .is_some_and(|s| s.len() == 2),
        "{created}"
    );
}

//! A real HTTP hub for tests: an installation in a temporary data directory (kernel keyutils
//! key store), its agents, and `agentseal serve --http 127.0.0.1:0` as a child process.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Runs the `agentseal` binary on `dir`; panics with its stderr unless it succeeds.
pub fn cli(dir: &Path, args: &[&str]) -> String {
    let out = cli_output(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs the `agentseal` binary on `dir` and returns what it did.
pub fn cli_output(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils"])
        .args(args)
        .output()
        .unwrap()
}

/// An installation (destroyed on drop) that can run a hub.
pub struct Installation {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Installation {
    /// A new installation with `agents`, each given as (agent id, `--alg` value).
    pub fn new(agents: &[(&str, &str)]) -> Installation {
        Self::with_init(&[], agents)
    }

    /// As [`Installation::new`], with extra `init` flags (such as `--ca-id`).
    pub fn with_init(init: &[&str], agents: &[(&str, &str)]) -> Installation {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut args = vec!["init", "--alg", "ed25519"];
        args.extend_from_slice(init);
        cli(&dir, &args);
        for (agent, alg) in agents {
            cli(&dir, &["agent", "create", agent, "--alg", alg]);
        }
        Installation { _tmp: tmp, dir }
    }

    /// A data directory with no installation yet.
    pub fn empty() -> Installation {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        Installation { _tmp: tmp, dir }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.dir, args)
    }

    /// Starts `agentseal serve --http 127.0.0.1:0 <extra>` and waits until it listens.
    pub fn serve(&self, extra: &[&str]) -> Hub {
        self.serve_with_env(extra, &[])
    }

    /// As [`Installation::serve`], with extra environment variables (a test clock).
    pub fn serve_with_env(&self, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Hub {
        spawn_hub(&self.dir, "keyutils", extra, env)
    }

    /// An access token for `agent` on `hub` (all scopes, default lifetime) plus `extra` flags.
    pub fn access_token(&self, hub: &Hub, agent: &str, extra: &[&str]) -> String {
        access_token(&self.dir, hub, agent, extra)
    }
}

/// An access token for `agent` on `hub`, issued by the installation in `dir`.
fn access_token(dir: &Path, hub: &Hub, agent: &str, extra: &[&str]) -> String {
    let audience = hub.mcp_url();
    let mut args = vec![
        "access-token",
        "issue",
        "--agent",
        agent,
        "--audience",
        &audience,
    ];
    args.extend_from_slice(extra);
    cli(dir, &args)
}

/// Starts `agentseal serve --http 127.0.0.1:0 <extra>` on the installation in `dir` with
/// `key_store`, and waits until it listens.
pub fn spawn_hub(
    dir: &Path,
    key_store: &str,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Hub {
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentseal"))
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--key-store",
                key_store,
                "--log",
                "info",
                "serve",
                "--http",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("agentseal: listening on ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("hub did not start: {}", log.lock().unwrap());
            }
        };
        Hub {
            child: Some(child),
            url,
            log,
        }
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        let out = cli_output(&self.dir, &["status"]);
        if let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) {
            let _ = cli_output(
                &self.dir,
                &[
                    "destroy",
                    "--confirm",
                    status["ca_id"].as_str().unwrap_or(""),
                ],
            );
        }
    }
}

/// A running hub process, killed on drop.
pub struct Hub {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Hub {
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.url)
    }

    /// Everything the hub wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("hub did not stop within 30 s of SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the hub answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The JSON-RPC message of the reply (JSON or the last SSE `data:` event).
    pub fn message(&self) -> Value {
        if let Ok(value) = serde_json::from_str(&self.body) {
            return value;
        }
        self.body
            .lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .unwrap_or_else(|| panic!("no JSON-RPC message in {:?}", self.body))
    }

    pub fn www_authenticate(&self) -> String {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// A stateless (2026-07-28) MCP request with the required headers.
pub fn mcp_request(
    hub: &Hub,
    method: &str,
    name: Option<&str>,
    params: Value,
) -> reqwest::RequestBuilder {
    mcp_request_to(&hub.mcp_url(), method, name, params)
}

/// A 2025-11-25 `initialize` request with `token`: opens an MCP session.
pub fn initialize_request(hub: &Hub, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(hub.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        )
}

pub fn mcp_request_to(
    url: &str,
    method: &str,
    name: Option<&str>,
    params: Value,
) -> reqwest::RequestBuilder {
    mcp_request_on(&reqwest::Client::new(), url, method, name, params)
}

/// As [`mcp_request_to`], on `client` (whose connections are kept alive between requests).
pub fn mcp_request_on(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    name: Option<&str>,
    params: Value,
) -> reqwest::RequestBuilder {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    request
}

/// Sends `request`; panics if the hub cannot be reached.
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    try_send(request).await.unwrap()
}

/// Sends `request`.
pub async fn try_send(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    Ok(Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await?,
    })
}

/// Calls `tool` on the hub in one stateless (2026-07-28) request.
pub async fn call_tool(hub: &Hub, token: Option<&str>, tool: &str, arguments: Value) -> Answer {
    try_call_tool(&hub.mcp_url(), token, tool, arguments)
        .await
        .unwrap()
}

/// Calls `tool` at the MCP endpoint `url` in one stateless (2026-07-28) request.
pub async fn try_call_tool(
    url: &str,
    token: Option<&str>,
    tool: &str,
    arguments: Value,
) -> Result<Answer, reqwest::Error> {
    try_call_tool_on(&reqwest::Client::new(), url, token, tool, arguments).await
}

/// As [`try_call_tool`], on `client`.
pub async fn try_call_tool_on(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    tool: &str,
    arguments: Value,
) -> Result<Answer, reqwest::Error> {
    let mut request = mcp_request_on(
        client,
        url,
        "tools/call",
        Some(tool),
        json!({"name": tool, "arguments": arguments}),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    try_send(request).await
}

pub fn structured(answer: &Answer) -> Value {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let message = answer.message();
    message["result"]["structuredContent"].clone()
}

//! The console's pages, server-rendered: maud escapes every value, pages need no JavaScript,
//! and every form that changes something carries the session's CSRF token.

use agentseal::audit::RecordBody;
use agentseal::authority::{PendingApproval, SignalsStatus};
use agentseal::store::AgentRecord;
use agentseal::token::trust::RevocationEntry;
use maud::{DOCTYPE, Markup, html};

/// A page in the console's frame: header, navigation (`current` marked), sign-out.
pub fn layout(title: &str, current: &str, csrf: Option<&str>, body: Markup) -> Markup {
    let nav = [
        ("approvals", "Approvals"),
        ("agents", "Agents"),
        ("revocations", "Revocations"),
        ("audit", "Audit log"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · agentseal console" }
                // No Referer: the login page's URL holds the link's secret.
                link rel="stylesheet" href="/console/style.css" referrerpolicy="no-referrer";
            }
            body {
                header {
                    strong { "agentseal" }
                    @if let Some(csrf) = csrf {
                        nav {
                            @for (path, label) in nav {
                                @if path == current {
                                    a href={ "/console/" (path) } aria-current="page" { (label) }
                                } @else {
                                    a href={ "/console/" (path) } { (label) }
                                }
                            }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// `text` with the characters that can make it read otherwise than it is (bidirectional
/// overrides and isolates, zero-width and other invisible characters, controls) shown as
/// `\u{...}` escapes: a person approves what they can read.
fn visible(text: &str) -> String {
    text.chars()
        .map(|c| {
            let sneaky = matches!(
                c,
                '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2069}'
                    | '\u{FEFF}'
            ) || (c.is_control() && c != '\n');
            if sneaky {
                format!("\\u{{{:04X}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A time as UTC text.
fn when(seconds: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64),
    )
    .to_string()
}

/// The login page: a form that redeems the link (a GET never does, so a link previewer cannot
/// use it up).
pub fn login(token: Option<&str>, problem: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(problem) = problem {
            p.notice.bad { (problem) }
        }
        @match token {
            Some(token) => {
                p { "Sign in to the operator console of this hub with the login link you were given." }
                form method="post" action="/console/login" {
                    input type="hidden" name="token" value=(token);
                    button.approve type="submit" { "Sign in" }
                }
            }
            None => {
                p { "Only operators sign in here. On a machine with the installation, run:" }
                pre { "agentseal console login" }
                p.muted { "and open the link it prints within ten minutes. Agents' access tokens do not open the console." }
            }
        }
    };
    layout("Sign in", "", None, body)
}

/// The approvals waiting for a person, each with exactly what will be signed.
pub fn approvals(pending: &[PendingApproval], csrf: &str, now: i64) -> Markup {
    let body = html! {
        @if pending.is_empty() {
            p.muted { "Nothing waits for approval." }
        }
        @for approval in pending {
            section.card id={ "approval-" (approval.id) } {
                dl {
                    dt { "Agent" } dd { (visible(&approval.request.agent_id)) }
                    dt { "Action" } dd { code { (visible(&approval.request.action)) } }
                    dt { "Audience" } dd { (visible(&approval.request.audience)) }
                    @if let Some(principal) = &approval.request.on_behalf_of {
                        dt { "On behalf of" } dd { (visible(principal)) }
                    }
                    dt { "Token lifetime" } dd { (approval.request.ttl) " s" }
                    @if let Some(scope) = &approval.request.scope {
                        dt { "Scope" } dd { (scope) }
                    }
                    dt { "Asked" } dd { (when(approval.requested_at)) }
                    dt { "Expires" } dd { (when(approval.expires_at)) " (" ((approval.expires_at - now).max(0)) " s left)" }
                    dt { "Id" } dd { code { (approval.id) } }
                }
                div { "Arguments (SHA-256 " code { (approval.request.args_sha256) } "):" }
                pre.arguments {
                    (visible(&serde_json::to_string_pretty(&approval.request.args).unwrap_or_default()))
                }
                div.actions {
                    form method="post" action={ "/console/approvals/" (approval.id) "/approve" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.approve type="submit" name="decide" value="approve" { "Approve" }
                    }
                    form method="post" action={ "/console/approvals/" (approval.id) "/deny" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="text" name="reason" required placeholder="Reason (the agent is told)" aria-label="Reason";
                        button.deny type="submit" name="decide" value="deny" { "Deny" }
                    }
                }
            }
        }
    };
    layout("Approvals", "approvals", Some(csrf), body)
}

/// One agent as the agents page shows it.
pub struct AgentRow {
    /// The record.
    pub agent: AgentRecord,
    /// Its current certificate's expiry.
    pub expires_at: Option<i64>,
    /// Whether its current certificate is revoked.
    pub revoked: bool,
    /// Its last audited operation, and when.
    pub last_activity: Option<(String, i64)>,
}

/// The agents, their certificates, and revoking one.
pub fn agents(rows: &[AgentRow], csrf: &str) -> Markup {
    let body = html! {
        div.wrap {
            table {
                thead { tr { th { "Agent" } th { "Algorithms" } th { "Certificate" } th { "Expires" } th { "Last activity" } th {} } }
                tbody {
                    @for row in rows {
                        tr {
                            td data-label="Agent" { (row.agent.agent_id) }
                            td data-label="Algorithms" { (row.agent.algorithms.join(", ")) }
                            td data-label="Certificate" {
                                code { (row.agent.current_serial.as_deref().unwrap_or("—")) }
                                @if row.revoked { " " span.bad { "revoked" } }
                            }
                            td data-label="Expires" { (row.expires_at.map(when).unwrap_or_default()) }
                            td data-label="Last activity" {
                                @if let Some((op, at)) = &row.last_activity {
                                    (op) br; span.muted { (when(*at)) }
                                } @else { span.muted { "none recorded" } }
                            }
                            td {
                                @if let (Some(serial), false) = (&row.agent.current_serial, row.revoked) {
                                    form method="post" action="/console/agents/revoke" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="serial" value=(serial);
                                        input type="text" name="reason" required placeholder="Reason" aria-label={ "Reason to revoke " (row.agent.agent_id) };
                                        button.revoke type="submit" { "Revoke certificate" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Agents", "agents", Some(csrf), body)
}

/// Revocations, recent refusals, and where the webhooks stand.
pub fn revocations(
    certificates: &[RevocationEntry],
    tokens: &[RevocationEntry],
    refusals: &[(i64, RecordBody)],
    signals: &SignalsStatus,
    csrf: &str,
) -> Markup {
    let table = |entries: &[RevocationEntry]| {
        html! {
            @if entries.is_empty() { p.muted { "None." } } @else {
                div.wrap { table {
                    thead { tr { th { "Id" } th { "Revoked" } th { "Reason" } } }
                    tbody { @for e in entries.iter().rev().take(100) {
                        tr { td data-label="Id" { code { (e.id) } } td data-label="Revoked" { (when(e.revoked_at)) } td data-label="Reason" { (e.reason) } }
                    } }
                } }
            }
        }
    };
    let body = html! {
        h2 { "Certificates" } (table(certificates))
        h2 { "Tokens" } (table(tokens))
        h2 { "Recent refusals" }
        @if refusals.is_empty() { p.muted { "None recorded." } } @else {
            div.wrap { table {
                thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Operation" } th { "Reasons" } } }
                tbody { @for (seq, r) in refusals {
                    tr { td data-label="#" { (seq) } td data-label="When" { (when(r.time)) } td data-label="Actor" { (r.actor) } td data-label="Operation" { code { (r.op) } } td data-label="Reasons" { (r.reasons.join(", ")) } }
                } }
            } }
        }
        h2 { "Signals" }
        dl {
            dt { "Webhook" } dd { (signals.webhook_url.as_deref().unwrap_or("none configured")) }
            dt { "Waiting" } dd { (signals.outbox.pending) }
            dt { "Given up" } dd { (signals.outbox.given_up) }
            dt { "Auto-revoke" } dd {
                @if let Some(rule) = &signals.auto_revoke {
                    (rule.rejections) " rejections within " (rule.window_seconds) " s"
                } @else { "off" }
            }
        }
    };
    layout("Revocations", "revocations", Some(csrf), body)
}

/// What the audit page shows above its records.
pub struct AuditState {
    /// `Ok(records verified)` or the fault found; `None` when not asked to verify.
    pub verified: Option<Result<i64, String>>,
    /// The latest checkpoint (a signed note), if one was made.
    pub checkpoint: Option<String>,
}

/// The audit log, filtered by agent and operation, newest first.
pub fn audit(
    records: &[(i64, RecordBody)],
    state: &AuditState,
    agent: &str,
    operation: &str,
    csrf: &str,
) -> Markup {
    let body = html! {
        @match &state.verified {
            Some(Ok(count)) => p.notice.ok { "Verified: " (count) " records, each signed and chained, against the CA's keys in the key store." },
            Some(Err(fault)) => p.notice.bad { "Does not verify: " (fault) },
            None => form.filters method="get" action="/console/audit" {
                input type="hidden" name="agent" value=(agent);
                input type="hidden" name="op" value=(operation);
                input type="hidden" name="verify" value="1";
                span.muted { "The whole log is checked on request (a signature per record)." }
                button type="submit" { "Verify the log" }
            },
        }
        @if let Some(note) = &state.checkpoint {
            details { summary { "Latest checkpoint" } pre { (note) } }
        }
        form.filters method="get" action="/console/audit" {
            input type="text" name="agent" value=(agent) placeholder="Agent (actor)" aria-label="Agent";
            input type="text" name="op" value=(operation) placeholder="Operation, e.g. mcp.sign_action" aria-label="Operation";
            button type="submit" { "Filter" }
        }
        @if records.is_empty() { p.muted { "No records match." } } @else {
            div.wrap { table {
                thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Operation" } th { "Decision" } th { "Reasons" } } }
                tbody { @for (seq, r) in records {
                    tr {
                        td data-label="#" { (seq) } td data-label="When" { (when(r.time)) }
                        td data-label="Actor" { (r.actor) } td data-label="Operation" { code { (r.op) } }
                        td data-label="Decision" { (format!("{:?}", r.decision).to_lowercase()) }
                        td data-label="Reasons" { (r.reasons.join(", ")) }
                    }
                } }
            } }
        }
    };
    layout("Audit log", "audit", Some(csrf), body)
}

/// A short page saying what went wrong.
pub fn problem(title: &str, message: &str) -> Markup {
    layout(
        title,
        "",
        None,
        html! { p.notice.bad { (message) } p { a href="/console/login" { "Sign in again" } } },
    )
}

//! What the audit log records of a front-end operation: identifiers and decisions, picked from
//! the request and the result by allow-list, so that no token, certificate, proof, action
//! argument or key ever reaches the log.

use agentseal::audit::{AuditEvent, Decision};
use serde_json::{Map, Value};

/// Request and result fields copied into a record (string values shortened).
const RECORDED_FIELDS: [&str; 34] = [
    "ca_id",
    "on_behalf_of",
    "delegate",
    "actions",
    "audiences",
    "grant_id",
    "action",
    "audience",
    "ttl_seconds",
    "scope",
    "expected_action",
    "consume",
    "token_id",
    "serial",
    "certificate_serial",
    "own_certificate",
    "reason",
    "agent_id",
    "valid",
    "revoked",
    "kind",
    "id",
    "ids",
    "expires_at",
    "transport",
    "durability",
    // Federation trust rules (`agentseal federation`).
    "issuer",
    "subject_pattern",
    "agent_template",
    "jwks",
    "conditions",
    "replace",
    "removed",
    // Out-of-band approvals: the id an agent is given and brings back.
    "approval_id",
];
/// Longest string value kept: enough for any id, short enough that a caller cannot bloat the log.
const MAX_STRING: usize = 256;

/// An event for `operation` by `actor`: its decision and reasons read from `result` (`valid:
/// false` with `reasons` is a denial; an error a failure), details from `request` and `result`.
pub fn event(
    actor: &str,
    operation: &str,
    request: &Map<String, Value>,
    result: Result<&Value, &str>,
    mut details: Map<String, Value>,
) -> AuditEvent {
    copy_fields(request, &mut details);
    let mut event = AuditEvent::new(actor, operation, Decision::Allowed);
    match result {
        Ok(value) => {
            if let Some(object) = value.as_object() {
                let mut outcome = Map::new();
                copy_fields(object, &mut outcome);
                if !outcome.is_empty() {
                    details.insert("result".into(), Value::Object(outcome));
                }
                if object.get("valid") == Some(&Value::Bool(false)) {
                    event.decision = Decision::Denied;
                    event.reasons = strings(object.get("reasons"));
                }
            }
        }
        Err(code) => {
            event.decision = Decision::Failed;
            event.reasons = vec![code.to_owned()];
        }
    }
    if let Ok(Some(chain)) = result.map(|r| r.get("delegation")) {
        // The chain a verified token carried: principal first, then the acting agents.
        event.chain = std::iter::once(chain.get("principal"))
            .chain(chain["actors"].as_array().into_iter().flatten().map(Some))
            .filter_map(|v| v.and_then(Value::as_str).map(shorten))
            .take(16)
            .collect();
    }
    // A record stays small whatever the caller sent.
    if serde_json::to_string(&details).map_or(0, |t| t.len()) > MAX_DETAILS {
        details = Map::from_iter([("truncated".to_owned(), Value::Bool(true))]);
    }
    event.details = details;
    event
}

/// Largest serialized `details` kept; beyond it only `truncated: true` is recorded.
const MAX_DETAILS: usize = 4096;

/// Copies the allow-listed fields; tokens and certificates become the ids they name.
fn copy_fields(from: &Map<String, Value>, to: &mut Map<String, Value>) {
    for field in RECORDED_FIELDS {
        if let Some(value) = from.get(field) {
            to.insert(field.to_owned(), bounded(value));
        }
    }
    for (field, id_field) in [("token", "token_id"), ("certificate", "certificate_serial")] {
        if let Some(id) = from
            .get(field)
            .and_then(Value::as_str)
            .and_then(credential_id)
        {
            to.entry(id_field)
                .or_insert_with(|| Value::String(shorten(&id)));
        }
    }
}

/// The value, with strings shortened and only scalars or lists of strings kept.
fn bounded(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(shorten(s)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .take(32)
                .filter_map(|v| v.as_str().map(|s| Value::String(shorten(s))))
                .collect(),
        ),
        Value::Object(_) => Value::String("(object)".into()),
        other => other.clone(),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= MAX_STRING {
        return s.to_owned();
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(shorten))
                .collect()
        })
        .unwrap_or_default()
}

/// The id (`jti`) a token or certificate names, if it parses.
fn credential_id(encoded: &str) -> Option<String> {
    let jws = agentseal::jose::Jws::parse(encoded).ok()?;
    let claims: Value = serde_json::from_slice(&jws.payload).ok()?;
    claims.get("jti")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_and_action_arguments_never_reach_the_record() {
        let request = json!({
            "action": "deploy",
            "audience": "agent://b",
            "arguments": {"password": "hunter2"},
            "token": "not-a-jws",
            "proof": "p",
            "challenge": "c",
        });
        let result = json!({"token": "eyJsecret", "token_id": "t1", "expires_at": 5});
        let event = event(
            "agent://a",
            "mcp.sign_action",
            request.as_object().unwrap(),
            Ok(&result),
            Map::new(),
        );
        let text = serde_json::to_string(&event.details).unwrap();
        for secret in ["hunter2", "eyJsecret", "not-a-jws", "\"p\"", "\"c\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(event.details["action"], "deploy");
        assert_eq!(event.details["result"]["token_id"], "t1");
        assert_eq!(event.decision, Decision::Allowed);
    }

    #[test]
    fn a_failed_verification_is_a_denial_with_its_reasons_and_an_error_a_failure() {
        let result = json!({"valid": false, "reasons": ["expired"]});
        let denied = event("a", "mcp.verify_peer", &Map::new(), Ok(&result), Map::new());
        assert_eq!(denied.decision, Decision::Denied);
        assert_eq!(denied.reasons, ["expired"]);
        let failed = event(
            "a",
            "mcp.revoke",
            &Map::new(),
            Err("invalid_params"),
            Map::new(),
        );
        assert_eq!(failed.decision, Decision::Failed);
        assert_eq!(failed.reasons, ["invalid_params"]);
    }

    #[test]
    fn long_values_are_shortened() {
        let request = json!({ "action": "x".repeat(10_000) });
        let event = event(
            "a",
            "op",
            request.as_object().unwrap(),
            Err("e"),
            Map::new(),
        );
        assert!(event.details["action"].as_str().unwrap().len() < 300);
    }
}

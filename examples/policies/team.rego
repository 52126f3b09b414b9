# A policy for a small team of agents, by role (the certificate's `meta.role`, set with
# `agentseal agent create ID --meta role=deployer`).
#
#   cp examples/policies/team.rego "$AGENTSEAL_DATA_DIR/policy.rego"   # takes effect within a second
#   agentseal policy check --agent agent://acme.example/ci --action deploy --aud https://deploy.acme.example
#
# Rego v1 (OPA 1.x); `opa fmt` and `opa test` work on it as on any OPA policy.
package agentseal

import rego.v1

# What each role may do: actions (glob patterns), audiences, the longest token lifetime, how
# many tokens a minute, and which actions a person must approve.
roles := {
	"deployer": {
		"actions": ["deploy", "rollback", "status.*"],
		"audiences": ["https://deploy.acme.example"],
		"max_ttl": 300,
		"per_minute": 30,
		"approve": ["rollback"],
	},
	"support": {
		"actions": ["tickets.*", "payments.refund"],
		"audiences": ["https://support.acme.example", "https://payments.acme.example"],
		"max_ttl": 120,
		"per_minute": 60,
		"approve": ["payments.refund"],
	},
}

role := roles[input.role]

action_allowed if {
	some pattern in role.actions
	glob.match(pattern, ["."], input.action)
}

# Delegating passes on actions: each one must be the delegator's to give.
delegation_allowed if {
	input.operation == "delegate"
	every action in input.actions {
		some pattern in role.actions
		glob.match(pattern, ["."], action)
	}
}

reasons contains sprintf("unknown role %q: give the agent a role", [object.get(input, "role", "none")]) if not role

reasons contains sprintf("role %s may not %s", [input.role, input.action]) if {
	role
	input.operation == "sign_action"
	not action_allowed
}

reasons contains sprintf("role %s may not address %s", [input.role, input.audience]) if {
	role
	input.operation == "sign_action"
	not input.audience in role.audiences
}

reasons contains sprintf("role %s may not delegate %v", [input.role, input.actions]) if {
	role
	input.operation == "delegate"
	not delegation_allowed
}

default approval := false

approval if input.action in role.approve

default decision := {"allow": false, "reasons": ["no role matched"]}

decision := {
	"allow": count(reasons) == 0,
	"reasons": sort(reasons),
	"max_ttl": role.max_ttl,
	"approval": approval,
	"rate_limit": {"count": role.per_minute, "per_seconds": 60},
} if role

decision := {"allow": false, "reasons": sort(reasons)} if not role

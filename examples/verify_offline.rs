//! A service that only verifies: given what the operator published (the CA id and JWKS, the
//! revocation list) and what the agent sent (its certificate and an action token), decide
//! offline whether to perform the action.
//!
//! ```sh
//! agentseal status | jq -r .ca_id > ca_id.txt
//! agentseal jwks > ca-jwks.json
//! agentseal crl > crl.jwt
//! agentseal cert show agent://acme.example/reviewer | jq -r .certificate > cert.jwt
//! agentseal token sign --agent agent://acme.example/reviewer --action deploy \
//!     --aud https://deploy.acme.example --arg repo=web > token.jwt
//! cargo run --example verify_offline -- "$(cat ca_id.txt)" ca-jwks.json crl.jwt cert.jwt token.jwt \
//!     https://deploy.acme.example deploy '{"repo":"web"}'
//! ```

use std::process::ExitCode;

use agentseal::jose::JwkSet;
use agentseal::token::action::Expectations;
use agentseal::token::revocation::RevocationList;
use agentseal::token::trust::TrustAnchor;
use agentseal::verify::{PresentedCertificates, Verifier};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ca_id, jwks, crl, cert, token, audience, action, arguments] = args.as_slice() else {
        eprintln!(
            "usage: verify_offline CA_ID CA_JWKS_FILE CRL_FILE CERT_FILE TOKEN_FILE AUDIENCE ACTION ARGS_JSON"
        );
        return ExitCode::from(2);
    };
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned());
    let (Ok(jwks), Ok(crl), Ok(cert), Ok(token)) = (read(jwks), read(crl), read(cert), read(token))
    else {
        eprintln!("cannot read one of the input files");
        return ExitCode::from(2);
    };
    let Ok(jwks) = serde_json::from_str::<JwkSet>(&jwks) else {
        eprintln!("the JWKS file is not a JWK Set");
        return ExitCode::from(2);
    };
    // The trust anchor is configured, never taken from what the agent sends: a key named by a
    // certificate's own header proves nothing.
    let keys: Result<Vec<_>, _> = jwks.keys.iter().map(|k| k.to_public_key()).collect();
    let Ok(keys) = keys else {
        eprintln!("the CA JWKS holds an unusable key");
        return ExitCode::from(2);
    };
    let anchor = TrustAnchor {
        ca_id: ca_id.clone(),
        keys,
    };
    let now = agentseal::clock::now();
    let outcome = RevocationList::verify(&crl, &anchor, 300).and_then(|crl| {
        let presented = PresentedCertificates(vec![cert.clone()]);
        let verifier = Verifier {
            anchor: &anchor,
            certificates: &presented,
            revocation: &crl,
            skew: 60,
            cache: None,
        };
        let expect = Expectations {
            max_delegation_depth: None,
            audience: Some(audience.clone()),
            action: Some(action.clone()),
            args: Some(agentseal::verify::parse_args(arguments)?),
        };
        verifier.verify_token(&token, &expect, now)
    });
    match outcome {
        Ok(verified) => {
            // The signer is `iss`; `sub` differs only when it acts for a principal through a
            // verified delegation chain (or for a `user:` it names).
            let on_behalf = if verified.claims.sub == verified.claims.iss {
                String::new()
            } else {
                format!(" on behalf of {}", verified.claims.sub)
            };
            println!(
                "ALLOW {}{on_behalf} to {} for {}",
                verified.claims.iss, verified.claims.action, verified.claims.aud
            );
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("DENY ({}): {reason}", reason.code());
            ExitCode::from(1)
        }
    }
}

//! JOSE building blocks: strict base64url (RFC 7515 §2), strict JSON (no duplicate member names),
//! JWS in compact serialization (one signature) and in general JSON serialization (RFC 7515
//! §7.2.1, several signatures: the hybrid Ed25519 + ML-DSA-65 form), and JWK/JWKS (RFC 7517) with
//! RFC 7638 thumbprints.
//!
//! Verification never lets a header choose the key: the caller passes the key set the signer is
//! known to hold, and each key accepts only its own algorithm names. `jku`, `x5u`, `jwk` and `x5c`
//! headers are ignored; any `crit` header is refused, since agentseal understands no extension.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::{Algorithm, CryptoError, PublicKey, SigningKey};
use crate::reason::VerifyError;

/// The largest token or certificate agentseal accepts. A hybrid certificate (two public keys, two
/// signatures) is about 10 KB; anything far larger is refused before any parsing work.
pub const MAX_JWS_LEN: usize = 32 * 1024;
/// The largest revocation list accepted: lists grow with revocations (about 100 bytes each,
/// expired entries are dropped), so they get their own, larger bound.
pub const MAX_CRL_LEN: usize = 64 * 1024 * 1024;

/// Encodes bytes as base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes strict base64url: no padding, no whitespace, no non-zero trailing bits.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| VerifyError::malformed("invalid base64url"))
}

/// Parses JSON, refusing duplicate member names at any depth (RFC 7515 §5.2, RFC 8725 §3.1
/// advise against last-one-wins parsing, which lets two parsers read different claims).
pub fn parse_strict_json(bytes: &[u8]) -> Result<Value, VerifyError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut deserializer)
        .map_err(|e| VerifyError::malformed(format!("invalid JSON: {e}")))?;
    deserializer
        .end()
        .map_err(|e| VerifyError::malformed(format!("invalid JSON: {e}")))?;
    Ok(value)
}

/// Parses strict JSON that must be an object into `T`.
pub fn parse_strict_object<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &str,
) -> Result<T, VerifyError> {
    let value = parse_strict_json(bytes)?;
    if !value.is_object() {
        return Err(VerifyError::malformed(format!(
            "{what} is not a JSON object"
        )));
    }
    serde_json::from_value(value).map_err(|e| VerifyError::malformed(format!("{what}: {e}")))
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member name {key:?}")));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The protected header members agentseal reads. Others are ignored, except `crit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Signature algorithm.
    pub alg: String,
    /// Media type of the whole object (`agent-action+jwt`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Thumbprint of the signing key (RFC 7638).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Critical extensions; any value here makes the object unacceptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Value>,
}

/// One signature of a parsed JWS, with its protected header.
#[derive(Debug, Clone)]
pub struct JwsSignature {
    /// The protected header as it appeared (base64url), part of the signing input.
    pub protected_b64: String,
    /// The decoded protected header.
    pub header: Header,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// A parsed, not yet verified, JWS with one or more signatures over one payload.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The payload as it appeared (base64url), part of the signing input.
    pub payload_b64: String,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// The signatures, in the order they appeared.
    pub signatures: Vec<JwsSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneralJws {
    payload: String,
    signatures: Vec<GeneralSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneralSignature {
    protected: String,
    signature: String,
}

/// How a signer names Ed25519 in the `alg` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EdAlgName {
    /// `EdDSA` (RFC 8037): what most verifiers in the field accept today.
    #[default]
    EdDsa,
    /// `Ed25519` (RFC 9864): the fully-specified name.
    Ed25519,
}

fn jose_alg(algorithm: Algorithm, ed_name: EdAlgName) -> &'static str {
    match (algorithm, ed_name) {
        (Algorithm::Ed25519, EdAlgName::EdDsa) => "EdDSA",
        (Algorithm::Ed25519, EdAlgName::Ed25519) => "Ed25519",
        (Algorithm::MlDsa65, _) => "ML-DSA-65",
    }
}

/// Signs `payload` with every key in `keys`: compact serialization for one key, general JSON
/// serialization (one entry per key, same payload) for several.
pub fn sign(
    payload: &impl Serialize,
    typ: &str,
    keys: &[&SigningKey],
    ed_name: EdAlgName,
) -> Result<String, CryptoError> {
    let payload = serde_json::to_vec(payload).expect("claims serialize to JSON");
    let payload_b64 = b64(&payload);
    let mut signatures = Vec::with_capacity(keys.len());
    for key in keys {
        let header = Header {
            alg: jose_alg(key.algorithm(), ed_name).to_owned(),
            typ: Some(typ.to_owned()),
            kid: Some(thumbprint(key.public_key())),
            crit: None,
        };
        let protected = b64(&serde_json::to_vec(&header).expect("header serializes"));
        let signature = key.sign(format!("{protected}.{payload_b64}").as_bytes())?;
        signatures.push(GeneralSignature {
            protected,
            signature: b64(&signature),
        });
    }
    if let [only] = signatures.as_slice() {
        return Ok(format!(
            "{}.{}.{}",
            only.protected, payload_b64, only.signature
        ));
    }
    let general = GeneralJws {
        payload: payload_b64,
        signatures,
    };
    Ok(serde_json::to_string(&general).expect("JWS serializes"))
}

impl Jws {
    /// Parses a compact or general-JSON JWS without verifying it.
    pub fn parse(input: &str) -> Result<Jws, VerifyError> {
        Self::parse_limited(input, MAX_JWS_LEN)
    }

    /// As [`Jws::parse`], with another size limit.
    pub fn parse_limited(input: &str, limit: usize) -> Result<Jws, VerifyError> {
        if input.len() > limit {
            return Err(VerifyError::Oversized {
                len: input.len(),
                limit,
            });
        }
        // Strict text: a token is exactly its characters. Front-ends that read a line (stdin, a
        // file, an HTTP body) strip its line ending; the verifier does not guess.
        if input.trim() != input {
            return Err(VerifyError::malformed(
                "whitespace before or after the token",
            ));
        }
        if input.starts_with('{') {
            let general: GeneralJws = parse_strict_object(input.as_bytes(), "JWS JSON")?;
            if general.signatures.is_empty() {
                return Err(VerifyError::malformed("JWS has no signatures"));
            }
            let payload = b64_decode(&general.payload)?;
            let signatures = general
                .signatures
                .into_iter()
                .map(|s| JwsSignature::parse(s.protected, &s.signature))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Jws {
                payload_b64: general.payload,
                payload,
                signatures,
            });
        }
        let mut parts = input.split('.');
        let (Some(protected), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::malformed(
                "expected three dot-separated base64url parts",
            ));
        };
        let payload = b64_decode(payload_b64)?;
        let signature = JwsSignature::parse(protected.to_owned(), signature)?;
        Ok(Jws {
            payload_b64: payload_b64.to_owned(),
            payload,
            signatures: vec![signature],
        })
    }

    /// Refuses the object unless every signature's protected header says `typ` (RFC 8725 §3.11).
    pub fn check_typ(&self, typ: &'static str) -> Result<(), VerifyError> {
        for signature in &self.signatures {
            let found = signature.header.typ.as_deref().unwrap_or("");
            if found != typ {
                return Err(VerifyError::WrongType {
                    expected: typ,
                    found: found.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Verifies a CA's signatures against every key it is trusted with, which during a key
    /// rotation's overlap holds two generations: each algorithm among `keys` needs exactly one
    /// signature, valid under one of the keys of that algorithm (a hybrid CA's objects still need
    /// both algorithms), every `alg` allow-listed, and no signature beyond one per algorithm.
    /// With one key per algorithm this is [`Jws::verify`].
    pub fn verify_by_generation(&self, keys: &[PublicKey]) -> Result<(), VerifyError> {
        self.verify_each_algorithm(keys)
    }

    /// Verifies the signatures against a signer's complete key set: every `alg` against the key
    /// allow-list, then one valid signature per key (a hybrid signer needs both), and no
    /// signature that no key accounts for. Call [`Jws::check_typ`] first.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), VerifyError> {
        let algorithms = distinct_algorithms(keys);
        if algorithms.len() != keys.len() {
            return Err(VerifyError::malformed(
                "a signer with two keys of one algorithm",
            ));
        }
        self.verify_each_algorithm(keys)
    }

    /// The rule of [`Jws::verify_by_generation`].
    fn verify_each_algorithm(&self, keys: &[PublicKey]) -> Result<(), VerifyError> {
        for signature in &self.signatures {
            let alg = &signature.header.alg;
            if !keys.iter().any(|k| k.algorithm().accepts_jose_alg(alg)) {
                return Err(VerifyError::AlgNotAllowed(alg.clone()));
            }
        }
        let algorithms = distinct_algorithms(keys);
        if self.signatures.len() > algorithms.len() {
            return Err(VerifyError::malformed(
                "more signatures than the signer has keys",
            ));
        }
        for algorithm in algorithms {
            let mut candidates = self
                .signatures
                .iter()
                .filter(|s| algorithm.accepts_jose_alg(&s.header.alg));
            let Some(signature) = candidates.next() else {
                return Err(VerifyError::MissingSignature(algorithm));
            };
            if candidates.next().is_some() {
                return Err(VerifyError::malformed(format!(
                    "two {algorithm} signatures"
                )));
            }
            let input = format!("{}.{}", signature.protected_b64, self.payload_b64);
            let valid = keys
                .iter()
                .filter(|k| k.algorithm() == algorithm)
                .any(|k| k.verify(input.as_bytes(), &signature.signature));
            if !valid {
                return Err(VerifyError::BadSignature(algorithm));
            }
        }
        Ok(())
    }
}

/// The algorithms of `keys`, each once, in order of first appearance.
fn distinct_algorithms(keys: &[PublicKey]) -> Vec<crate::crypto::Algorithm> {
    let mut algorithms = Vec::new();
    for key in keys {
        if !algorithms.contains(&key.algorithm()) {
            algorithms.push(key.algorithm());
        }
    }
    algorithms
}

impl JwsSignature {
    fn parse(protected_b64: String, signature_b64: &str) -> Result<Self, VerifyError> {
        if protected_b64.is_empty() {
            return Err(VerifyError::malformed("empty protected header"));
        }
        let header = parse_strict_json(&b64_decode(&protected_b64)?)?;
        // Any `crit` member, even null, names extensions we do not implement (RFC 7515 §4.1.11).
        if header.get("crit").is_some() {
            return Err(VerifyError::malformed("unsupported critical header"));
        }
        let header: Header = serde_json::from_value(header)
            .map_err(|e| VerifyError::malformed(format!("JWS header: {e}")))?;
        let signature = b64_decode(signature_b64)?;
        Ok(JwsSignature {
            protected_b64,
            header,
            signature,
        })
    }
}

/// A public JWK: `OKP`/`Ed25519` (RFC 8037) or `AKP`/`ML-DSA-65` (RFC 9964).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP` or `AKP`.
    pub kty: String,
    /// Curve, for OKP: `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public key, for OKP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Algorithm: required for AKP (`ML-DSA-65`), informative for OKP (`EdDSA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Public key, for AKP.
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// RFC 7638 thumbprint of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use: `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The public JWK of `key`, with its thumbprint as `kid`.
    pub fn from_public_key(key: &PublicKey) -> Jwk {
        let encoded = b64(&key.to_bytes());
        let (kty, crv, x, alg, public) = match key.algorithm() {
            Algorithm::Ed25519 => ("OKP", Some("Ed25519"), Some(encoded), "EdDSA", None),
            Algorithm::MlDsa65 => ("AKP", None, None, "ML-DSA-65", Some(encoded)),
        };
        Jwk {
            kty: kty.to_owned(),
            crv: crv.map(str::to_owned),
            x,
            alg: Some(alg.to_owned()),
            public,
            kid: Some(thumbprint(key)),
            use_: Some("sig".to_owned()),
        }
    }

    /// The key this JWK describes; unknown key types and malformed keys are refused.
    pub fn to_public_key(&self) -> Result<PublicKey, VerifyError> {
        let (algorithm, encoded) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => (Algorithm::Ed25519, self.x.as_deref()),
            ("AKP", _) if self.alg.as_deref() == Some("ML-DSA-65") => {
                (Algorithm::MlDsa65, self.public.as_deref())
            }
            _ => return Err(VerifyError::malformed("unsupported JWK key type")),
        };
        let encoded = encoded.ok_or_else(|| VerifyError::malformed("JWK lacks its public key"))?;
        PublicKey::from_bytes(algorithm, &b64_decode(encoded)?)
            .map_err(|e| VerifyError::malformed(format!("JWK: {e}")))
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// A signed object as a JSON value: a JWS JSON serialization (a hybrid object) as the object it
/// is, a compact JWS as its string. For output, so that nobody has to parse JSON inside a string.
pub fn as_json_value(encoded: &str) -> Value {
    if encoded.trim_start().starts_with('{')
        && let Ok(object @ Value::Object(_)) = serde_json::from_str(encoded)
    {
        return object;
    }
    Value::String(encoded.to_owned())
}

/// The RFC 7638 thumbprint of a public key, base64url: SHA-256 over the required members in
/// lexicographic order (`crv`,`kty`,`x` for OKP; `alg`,`kty`,`pub` for AKP per RFC 9964).
pub fn thumbprint(key: &PublicKey) -> String {
    let encoded = b64(&key.to_bytes());
    let canonical = match key.algorithm() {
        Algorithm::Ed25519 => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{encoded}"}}"#),
        Algorithm::MlDsa65 => format!(r#"{{"alg":"ML-DSA-65","kty":"AKP","pub":"{encoded}"}}"#),
    };
    b64(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_member_names_are_refused_at_any_depth() {
        assert!(parse_strict_json(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict_json(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_strict_json(br#"[{"b":1,"b":1}]"#).is_err());
        assert!(parse_strict_json(br#"{"a":{"b":1},"b":1}"#).is_ok());
    }

    #[test]
    fn trailing_garbage_after_json_is_refused() {
        assert!(parse_strict_json(br#"{"a":1} x"#).is_err());
    }

    #[test]
    fn base64url_must_be_strict() {
        assert_eq!(b64_decode("AQ").unwrap(), vec![1]);
        for bad in ["AQ==", "A+8", "A/8", "AQ\n", "AR"] {
            assert!(b64_decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn whitespace_around_a_token_is_malformed() {
        use crate::crypto::{Algorithm, Seed};
        let key = |algorithm, byte| {
            SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap())
        };
        let (ed, ml) = (key(Algorithm::Ed25519, 1), key(Algorithm::MlDsa65, 2));
        let compact = sign(&serde_json::json!({"a": 1}), "t", &[&ed], EdAlgName::EdDsa).unwrap();
        let general = sign(
            &serde_json::json!({"a": 1}),
            "t",
            &[&ed, &ml],
            EdAlgName::EdDsa,
        )
        .unwrap();
        for token in [&compact, &general] {
            assert!(Jws::parse(token).is_ok());
            for padded in [
                format!(" {token}"),
                format!("{token}\n"),
                format!("{token}\r\n"),
                format!("\t{token}"),
                format!("{token}\u{3000}"),
            ] {
                let error = Jws::parse(&padded).unwrap_err();
                assert_eq!(error.code(), "malformed", "{padded:?}");
            }
        }
    }

    #[test]
    fn compact_jws_needs_exactly_three_parts() {
        for bad in ["", "a.b", "a.b.c.d", "....", "a.b.c", "{"] {
            assert!(Jws::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn critical_headers_are_refused() {
        for header in [
            r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#,
            r#"{"alg":"EdDSA","crit":null}"#,
        ] {
            let err = Jws::parse(&format!("{}.e30.AA", b64(header.as_bytes()))).unwrap_err();
            assert_eq!(err.code(), "malformed", "{header}");
        }
    }

    #[test]
    fn headers_that_are_not_objects_are_refused() {
        for header in ["[]", "1", "\"x\"", r#"{"alg":1}"#] {
            let err = Jws::parse(&format!("{}.e30.AA", b64(header.as_bytes()))).unwrap_err();
            assert_eq!(err.code(), "malformed", "{header}");
        }
    }
}

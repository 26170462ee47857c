//! Who is applying: the user named by a verified bearer token (jwt mode), or the `userId` of the
//! body (body mode, for development, tests and trusted internal callers).
//!
//! A token is accepted only when signed with the configured key, by the algorithm that key is
//! for: HS256 for a secret, RS256, ES256 (P-256) or EdDSA (Ed25519) for a public key, the same
//! by key type for each key of a JWKS (chosen by the token's `kid`). What the token's header
//! says is never trusted, so neither `alg: none` nor an HS256 token signed with a public key as
//! the secret passes. `exp` is required; `nbf` and `iat` are honoured; `iss` and `aud` are
//! checked when configured; each time check allows the configured leeway.
//!
//! Verifying a public-key signature costs 20 to 60 µs (RS256, EdDSA, ES256 with jsonwebtoken's
//! aws-lc-rs backend, measured in BENCHMARKS.md), so a token verified once is remembered, by its SHA-256 digest, until its
//! `exp`: a user who clicks again, or retries, costs a hash and a lookup. At most
//! [`TOKEN_CACHE`] tokens are remembered; when a JWKS is read again, tokens verified with the
//! keys it had are verified afresh. HS256 costs about what the hash would, and is verified every
//! time. Tokens refused after verifying spend their client address's bad-token budget (see
//! `limits`), which the API checks before calling [`Verifier::verify`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use coupon_gate::UserId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quick_cache::sync::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{JwtConfig, JwtKey};

/// Why a request has no verified user: answered 401 with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unauthenticated(pub(crate) String);

/// A key with the checks every token it verifies must pass.
struct Key {
    key: DecodingKey,
    validation: Validation,
}

/// The most verified tokens remembered: at most about 17 MiB with 64-byte user ids (measured).
pub(crate) const TOKEN_CACHE: usize = 65_536;

/// Verifies bearer tokens and names their user.
pub(crate) struct Verifier {
    keys: Keys,
    leeway: u64,
    user_claim: String,
    /// Tokens verified with a public key: digest -> (user, exp, generation of the keys that
    /// verified it). `None` for a secret.
    verified: Option<Cache<[u8; 32], Verified>>,
}

/// A token not among those verified before: the keys it is to be verified with (the JWKS as it
/// was looked up; `None` for one key), and the digest to remember it by (`None` for a secret).
pub(crate) struct Unknown {
    state: Option<Arc<JwksState>>,
    digest: Option<[u8; 32]>,
}

/// A token verified before: its user, its `exp`, and the generation of the keys that verified it.
#[derive(Clone)]
struct Verified {
    user: UserId,
    exp: u64,
    generation: u64,
}

enum Keys {
    One(Key),
    Jwks(Jwks),
}

/// The keys of a JWKS file, read again when the file changes (looked at once a second at most).
struct Jwks {
    path: PathBuf,
    template: Validation,
    state: RwLock<Arc<JwksState>>,
    /// Milliseconds after `origin` at which the file was last looked at.
    checked: AtomicU64,
    origin: Instant,
}

struct JwksState {
    /// The file's modification time and length when read.
    stamp: Option<(SystemTime, u64)>,
    by_kid: HashMap<String, Key>,
    /// How many times the file was read again since the server started.
    generation: u64,
}

/// How often a JWKS file is looked at for changes.
const JWKS_CHECK: Duration = Duration::from_secs(1);

impl Verifier {
    /// A verifier for `config`.
    ///
    /// # Errors
    ///
    /// No key configured (the message names the variables and body mode), a secret shorter than
    /// [`JwtConfig::MIN_SECRET`], or a key file that cannot be read or is of an unsupported kind.
    pub(crate) fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let key = config.key.as_ref().context(
            "identity is jwt (COUPON_IDENTITY) but no key is configured: set COUPON_JWT_SECRET \
             (HS256, at least 32 bytes), COUPON_JWT_PUBLIC_KEY (a PEM file) or COUPON_JWT_JWKS \
             (a JWKS file), or run with COUPON_IDENTITY=body to trust the body's userId \
             (development and trusted callers only)",
        )?;
        let mut template = Validation::new(Algorithm::HS256);
        template.leeway = config.leeway.as_secs();
        template.validate_exp = true;
        template.validate_nbf = true;
        template.set_required_spec_claims(&["exp"]);
        // An empty setting is no setting.
        let named = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        match named(&config.issuer) {
            Some(issuer) => template.set_issuer(&[issuer]),
            None => template.iss = None,
        }
        match named(&config.audience) {
            Some(audience) => template.set_audience(&[audience]),
            None => template.validate_aud = false,
        }
        let one = |key: DecodingKey, algorithm: Algorithm| {
            Keys::One(Key {
                key,
                validation: for_algorithm(&template, algorithm),
            })
        };
        let verified = match key {
            JwtKey::Secret(_) => None,
            JwtKey::PublicKey(_) | JwtKey::Jwks(_) => Some(Cache::new(TOKEN_CACHE)),
        };
        let keys = match key {
            JwtKey::Secret(secret) => {
                anyhow::ensure!(
                    secret.len() >= JwtConfig::MIN_SECRET,
                    "COUPON_JWT_SECRET has {} bytes; an HS256 secret needs at least {}",
                    secret.len(),
                    JwtConfig::MIN_SECRET
                );
                one(DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtKey::PublicKey(path) => {
                let (key, algorithm) = public_key(path)?;
                info!(path = %path.display(), ?algorithm, "verifying tokens with a public key");
                one(key, algorithm)
            }
            JwtKey::Jwks(path) => {
                let state = read_jwks(path, &template)?;
                info!(path = %path.display(), keys = state.by_kid.len(), "verifying tokens with a JWKS");
                Keys::Jwks(Jwks {
                    path: path.clone(),
                    template,
                    state: RwLock::new(Arc::new(state)),
                    checked: AtomicU64::new(0),
                    origin: Instant::now(),
                })
            }
        };
        Ok(Self {
            keys,
            leeway: config.leeway.as_secs(),
            user_claim: config.user_claim.clone(),
            verified,
        })
    }

    /// The user of `token` if it is among the tokens verified before and not expired yet: costs
    /// its SHA-256 and a lookup (nothing for a secret, whose tokens cost about as much to
    /// verify). Otherwise what the lookup learned, for [`Verifier::verify`].
    pub(crate) fn remembered(&self, token: &str) -> Result<UserId, Unknown> {
        let state = match &self.keys {
            Keys::One(_) => None,
            Keys::Jwks(jwks) => Some(jwks.current()),
        };
        let Some(verified) = &self.verified else {
            return Err(Unknown {
                state,
                digest: None,
            });
        };
        let generation = state.as_ref().map_or(0, |state| state.generation);
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = verified.get(&digest) {
            let now = jsonwebtoken::get_current_timestamp();
            if known.generation == generation && now <= known.exp + self.leeway {
                return Ok(known.user);
            }
            verified.remove(&digest);
        }
        Err(Unknown {
            state,
            digest: Some(digest),
        })
    }

    /// The user `token` names, once its signature, algorithm and times check out; a token
    /// verified with a public key is remembered from then on. `unknown` is what
    /// [`Verifier::remembered`] answered for it.
    pub(crate) fn verify(&self, token: &str, unknown: Unknown) -> Result<UserId, Unauthenticated> {
        let (user, exp) = self.check(token, unknown.state.as_deref())?;
        if let (Some(verified), Some(digest)) = (&self.verified, unknown.digest) {
            let known = Verified {
                user: user.clone(),
                exp,
                generation: unknown.state.as_ref().map_or(0, |state| state.generation),
            };
            verified.insert(digest, known);
        }
        Ok(user)
    }

    /// Verifies `token` in full, with the one key or the JWKS `state`: the user it names and its
    /// `exp`.
    fn check(
        &self,
        token: &str,
        state: Option<&JwksState>,
    ) -> Result<(UserId, u64), Unauthenticated> {
        let claims = match (&self.keys, state) {
            (Keys::One(key), _) => decode(token, key)?,
            (Keys::Jwks(_), None) => unreachable!("remembered reads the JWKS state first"),
            (Keys::Jwks(_), Some(state)) => {
                let header = jsonwebtoken::decode_header(token).map_err(|err| rejected(&err))?;
                let kid = header
                    .kid
                    .ok_or_else(|| Unauthenticated("the token has no kid".to_owned()))?;
                let key = state.by_kid.get(&kid).ok_or_else(|| {
                    Unauthenticated(format!("the token's kid {kid:?} is not a known key"))
                })?;
                decode(token, key)?
            }
        };
        // Required, and checked, by the validation.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if let Some(iat) = claims.get("iat") {
            let now = jsonwebtoken::get_current_timestamp();
            match iat.as_u64() {
                Some(iat) if iat <= now + self.leeway => {}
                Some(_) => return Err(Unauthenticated("the token is issued in the future".into())),
                None => return Err(Unauthenticated("the token's iat is not a time".into())),
            }
        }
        let claim = &self.user_claim;
        let user = match claims.get(claim) {
            Some(Value::String(text)) => UserId::new(text.as_str()).ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| UserId::from_number(n).ok()),
            _ => None,
        };
        let user = user.ok_or_else(|| {
            Unauthenticated(format!(
                "the token's {claim} is missing or not a user id (1 to 64 characters from A-Z, \
                 a-z, 0-9 and . _ : @ | -)"
            ))
        })?;
        Ok((user, exp))
    }
}

impl Jwks {
    /// The keys as the file holds them now: read again when it changed since the last look,
    /// which is at most once a second, as the next generation (tokens verified by an earlier
    /// one are verified again: a key may have been withdrawn). A file that no longer reads keeps
    /// the keys it had.
    fn current(&self) -> Arc<JwksState> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= JWKS_CHECK.as_millis() as u64 || last == 0;
        if due
            && self
                .checked
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let current = self.state.read().expect("jwks lock").clone();
            if stamp(&self.path) != current.stamp {
                match read_jwks(&self.path, &self.template) {
                    Ok(mut fresh) => {
                        info!(path = %self.path.display(), keys = fresh.by_kid.len(), "JWKS changed; keys read again");
                        fresh.generation = current.generation + 1;
                        *self.state.write().expect("jwks lock") = Arc::new(fresh);
                    }
                    Err(err) => {
                        warn!(cause = %format!("{err:#}"), "JWKS changed but cannot be read; keeping the keys it had");
                    }
                }
            }
        }
        self.state.read().expect("jwks lock").clone()
    }
}

/// The claims of `token`, verified with `key`.
fn decode(token: &str, key: &Key) -> Result<HashMap<String, Value>, Unauthenticated> {
    jsonwebtoken::decode::<HashMap<String, Value>>(token, &key.key, &key.validation)
        .map(|data| data.claims)
        .map_err(|err| rejected(&err))
}

/// Why jsonwebtoken refused a token, in words for the client.
fn rejected(err: &jsonwebtoken::errors::Error) -> Unauthenticated {
    let why = match err.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "the token is malformed",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token is not signed with the algorithm of the configured key"
        }
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the expected one",
        ErrorKind::InvalidAudience => "the token's audience (aud) is not this service",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "the token has no exp",
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            "a claim of the token is missing or malformed"
        }
        _ => "the token does not verify",
    };
    Unauthenticated(why.to_owned())
}

/// The template's checks, for tokens of `algorithm` only.
fn for_algorithm(template: &Validation, algorithm: Algorithm) -> Validation {
    let mut validation = template.clone();
    validation.algorithms = vec![algorithm];
    validation
}

/// The key in a PEM file, and the algorithm it is for.
fn public_key(path: &Path) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read COUPON_JWT_PUBLIC_KEY {}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        anyhow::ensure!(
            is_p256(&pem),
            "{}: only P-256 EC keys (ES256) are accepted",
            path.display()
        );
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    anyhow::bail!(
        "{}: not a PEM public key of RSA, EC P-256 or Ed25519",
        path.display()
    )
}

/// Whether a PEM EC key names the P-256 curve (OID 1.2.840.10045.3.1.7).
fn is_p256(pem: &[u8]) -> bool {
    const PRIME256V1: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pem::parse(pem).is_ok_and(|pem| {
        pem.contents()
            .windows(PRIME256V1.len())
            .any(|w| w == PRIME256V1)
    })
}

/// A file's modification time and length, to tell whether it changed.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()))
}

/// The signing keys of a JWKS file, by kid. Keys without a kid, or of a kind this server does
/// not verify with, are left out with a warning.
fn read_jwks(path: &Path, template: &Validation) -> anyhow::Result<JwksState> {
    let stamp = stamp(path);
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read COUPON_JWT_JWKS {}", path.display()))?;
    let set: JwkSet = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a JWKS (a JSON object with keys)", path.display()))?;
    let mut by_kid = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            warn!(path = %path.display(), "a JWKS key without kid is left out");
            continue;
        };
        match jwk_algorithm(jwk).and_then(|algorithm| Ok((DecodingKey::from_jwk(jwk)?, algorithm)))
        {
            Ok((key, algorithm)) => {
                by_kid.insert(
                    kid,
                    Key {
                        key,
                        validation: for_algorithm(template, algorithm),
                    },
                );
            }
            Err(err) => warn!(path = %path.display(), %kid, cause = %err, "a JWKS key is left out"),
        }
    }
    anyhow::ensure!(
        !by_kid.is_empty(),
        "{} holds no usable key (RSA, EC P-256 or Ed25519, each with a kid)",
        path.display()
    );
    Ok(JwksState {
        stamp,
        by_kid,
        generation: 0,
    })
}

/// The algorithm a JWK verifies: its own `alg` when it names one of RS256, ES256 or EdDSA and
/// fits the key, else the one its type implies.
fn jwk_algorithm(jwk: &Jwk) -> anyhow::Result<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => anyhow::bail!("only RSA, EC P-256 and Ed25519 keys are used"),
    };
    let named = match jwk.common.key_algorithm {
        None => return Ok(implied),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(other) => anyhow::bail!("alg {other:?} is not one this server verifies"),
    };
    anyhow::ensure!(named == implied, "alg {named:?} does not fit the key");
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_refuses_to_start_and_names_what_to_set() {
        let err = Verifier::new(&JwtConfig::default())
            .err()
            .unwrap()
            .to_string();
        for name in [
            "COUPON_JWT_SECRET",
            "COUPON_JWT_PUBLIC_KEY",
            "COUPON_JWT_JWKS",
            "COUPON_IDENTITY=body",
        ] {
            assert!(err.contains(name), "{err}");
        }
        let short = JwtConfig {
            key: Some(JwtKey::Secret(vec![b'x'; 31])),
            ..JwtConfig::default()
        };
        assert!(Verifier::new(&short).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let key = JwtKey::Secret(b"correct horse battery staple xyz".to_vec());
        assert_eq!(format!("{key:?}"), "Secret(32 bytes)");
    }
}

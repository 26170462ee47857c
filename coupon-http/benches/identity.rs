//! What verifying one bearer token costs, by algorithm: jsonwebtoken's `decode` with the test
//! keys of `tests/keys/`, as the server calls it (signature, then the claims' times); what
//! refusing a token with a broken signature costs (`<alg>_forged`: what a flood of bad tokens
//! costs before the per-address budget stops it); and what finding a token verified before
//! costs (its SHA-256 digest looked up in a full cache of remembered tokens, as the server does
//! for public-key tokens).
//!
//! ```sh
//! cargo bench -p coupon-http --bench identity
//! ```

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quick_cache::sync::Cache;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test key")
}

fn identity(c: &mut Criterion) {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "auth0|5f3a9c", "iat": now, "exp": now + 3600});
    let secret = b"a benchmark secret of more than thirty-two bytes";
    let cases = [
        (
            "hs256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
        ),
        (
            "es256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&key("ec-private.pem")).expect("ec key"),
            DecodingKey::from_ec_pem(&key("ec-public.pem")).expect("ec key"),
        ),
        (
            "rs256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key("rsa-private.pem")).expect("rsa key"),
            DecodingKey::from_rsa_pem(&key("rsa-public.pem")).expect("rsa key"),
        ),
        (
            "eddsa",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&key("ed25519-private.pem")).expect("ed key"),
            DecodingKey::from_ed_pem(&key("ed25519-public.pem")).expect("ed key"),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for (name, algorithm, signing, verifying) in cases {
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &signing).expect("sign");
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        group.bench_function(name, |b| {
            b.iter(|| {
                jsonwebtoken::decode::<HashMap<String, Value>>(&token, &verifying, &validation)
                    .expect("verifies")
            });
        });
        // The same token with the signature's first character changed.
        let (signed, signature) = token.rsplit_once('.').expect("three parts");
        let first = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{signed}.{first}{}", &signature[1..]);
        group.bench_function(format!("{name}_forged"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<HashMap<String, Value>>(&forged, &verifying, &validation)
                    .expect_err("refused")
            });
        });
        if name == "es256" {
            // As many tokens as the server remembers, then one of them found again.
            let remembered: Cache<[u8; 32], (String, u64)> = Cache::new(65_536);
            for user in 0..65_536 {
                let claims = json!({"sub": format!("user-{user}"), "exp": now + 3600});
                let token = format!("{token}.{claims}");
                remembered.insert(
                    Sha256::digest(token.as_bytes()).into(),
                    (user.to_string(), 0),
                );
            }
            let again = format!("{token}.{}", json!({"sub": "user-4242", "exp": now + 3600}));
            group.bench_function("remembered", |b| {
                b.iter(|| {
                    let digest: [u8; 32] = Sha256::digest(again.as_bytes()).into();
                    remembered.get(&digest).expect("remembered")
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);

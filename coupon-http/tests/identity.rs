//! Who may apply, in jwt mode, against the real server and Redis: every kind of missing, forged,
//! stale or misdirected token is refused with 401 and changes nothing in Redis; a body naming
//! another user is 403; valid tokens of every key kind admit their user, string or numeric;
//! lookups of other users need the admin token; one user's burst meets 429.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coupon_http::{Config, Identity, JwtConfig, JwtKey};
use hyper::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestApp, config};

const SECRET: &[u8] = b"a test secret of more than thirty-two bytes";

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims valid for an hour, naming `sub`.
fn claims(sub: Value) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 3600})
}

fn sign(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        claims,
    )
}

type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

fn private_key(algorithm: Algorithm) -> EncodingKey {
    let (file, decode): (&str, FromPem) = match algorithm {
        Algorithm::RS256 => ("rsa-private.pem", EncodingKey::from_rsa_pem),
        Algorithm::ES256 => ("ec-private.pem", EncodingKey::from_ec_pem),
        Algorithm::EdDSA => ("ed25519-private.pem", EncodingKey::from_ed_pem),
        other => panic!("no test key for {other:?}"),
    };
    decode(&std::fs::read(key_file(file)).unwrap()).unwrap()
}

/// A server in jwt mode with `key`, a 5/s burst-10 user limit, and more settings from `jwt`.
async fn server(key: JwtKey, jwt: JwtConfig) -> TestApp {
    TestApp::start(Config {
        identity: Identity::Jwt,
        jwt: JwtConfig {
            key: Some(key),
            ..jwt
        },
        user_rate: 5,
        user_burst: 10.try_into().unwrap(),
        ..config()
    })
    .await
}

/// Applies to the default campaign with `authorization` (none if `None`) and `body`.
async fn apply(app: &TestApp, authorization: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    app.call(
        Method::POST,
        "/api/coupons/apply",
        &headers,
        body.to_owned(),
    )
    .await
}

/// Applies with `token`, expects 401 naming `why`, and checks Redis did not change.
async fn refused(app: &TestApp, authorization: Option<&str>, why: &str) {
    let before = app.snapshot().await;
    let (code, body) = apply(app, authorization, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{authorization:?}: {body}");
    assert_eq!(body["status"], "error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(why),
        "{authorization:?}: expected {why:?} in {body}"
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "{authorization:?} changed Redis"
    );
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_misdirected_tokens_are_refused_and_change_nothing() {
    let app = server(
        JwtKey::Secret(SECRET.to_vec()),
        JwtConfig {
            issuer: Some("https://id.example".into()),
            audience: Some("coupons".into()),
            leeway: Duration::from_secs(5),
            ..JwtConfig::default()
        },
    )
    .await;
    let valid = |sub: Value| {
        let mut c = claims(sub);
        c["iss"] = json!("https://id.example");
        c["aud"] = json!("coupons");
        c
    };
    let good = hs256(&valid(json!("auth0|5f3a9c")));

    refused(&app, None, "Bearer").await;
    refused(&app, Some(&format!("Basic {good}")), "Bearer").await;
    refused(&app, Some("Bearer not.a.token"), "malformed").await;
    refused(&app, Some("Bearer abc"), "malformed").await;

    // alg none: a header that names no algorithm and an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(valid(json!("mallory")).to_string());
    refused(&app, Some(&bearer(&format!("{header}.{payload}."))), "").await;

    // Signed with another secret.
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret of more than thirty-two bytes"),
        None,
        &valid(json!("mallory")),
    );
    refused(&app, Some(&bearer(&other)), "signature").await;

    // Another payload under a valid signature.
    let parts: Vec<&str> = good.split('.').collect();
    let swapped = URL_SAFE_NO_PAD.encode(valid(json!("mallory")).to_string());
    refused(
        &app,
        Some(&bearer(&format!("{}.{swapped}.{}", parts[0], parts[2]))),
        "signature",
    )
    .await;

    // Times: expired, not valid yet, issued in the future, no exp at all.
    let mut expired = valid(json!("alice"));
    expired["exp"] = json!(now() - 60);
    refused(&app, Some(&bearer(&hs256(&expired))), "expired").await;
    let mut early = valid(json!("alice"));
    early["nbf"] = json!(now() + 600);
    refused(&app, Some(&bearer(&hs256(&early))), "not valid yet").await;
    let mut future = valid(json!("alice"));
    future["iat"] = json!(now() + 600);
    refused(&app, Some(&bearer(&hs256(&future))), "future").await;
    let mut no_exp = valid(json!("alice"));
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&app, Some(&bearer(&hs256(&no_exp))), "no exp").await;

    // Issuer and audience.
    let mut stranger = valid(json!("alice"));
    stranger["iss"] = json!("https://elsewhere.example");
    refused(&app, Some(&bearer(&hs256(&stranger))), "issuer").await;
    let mut misdirected = valid(json!("alice"));
    misdirected["aud"] = json!("payments");
    refused(&app, Some(&bearer(&hs256(&misdirected))), "audience").await;

    // The subject: missing, not a user id, 65 bytes, numbers that are not ids.
    let mut nobody = valid(json!("alice"));
    nobody.as_object_mut().unwrap().remove("sub");
    refused(&app, Some(&bearer(&hs256(&nobody))), "sub").await;
    for sub in [
        json!("a b"),
        json!("x".repeat(65)),
        json!(""),
        json!(0),
        json!(-1),
        json!("007"),
    ] {
        refused(&app, Some(&bearer(&hs256(&valid(sub)))), "sub").await;
    }

    // A body naming another user than the token's: 403, nothing changed.
    let before = app.snapshot().await;
    let (code, body) = apply(&app, Some(&bearer(&good)), r#"{"userId":"bob"}"#).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::FORBIDDEN, &json!("error")),
        "{body}"
    );
    assert_eq!(app.snapshot().await, before);

    // The token's user, with no body, with {}, or naming itself; the scheme in any case.
    let (code, body) = apply(&app, Some(&format!("bearer {good}")), "").await;
    assert_eq!(
        (code, &body["status"], &body["userId"]),
        (StatusCode::OK, &json!("success"), &json!("auth0|5f3a9c")),
        "{body}"
    );
    let (code, body) = apply(&app, Some(&bearer(&good)), "{}").await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::CONFLICT, &json!("duplicate")),
        "{body}"
    );
    let (code, _) = apply(&app, Some(&bearer(&good)), r#"{"userId":"auth0|5f3a9c"}"#).await;
    assert_eq!(code, StatusCode::CONFLICT);
    // A numeric subject, as a string or a number, is the numeric user.
    let (code, body) = apply(&app, Some(&bearer(&hs256(&valid(json!(42))))), "").await;
    assert_eq!(
        (code, &body["userId"]),
        (StatusCode::OK, &json!(42)),
        "{body}"
    );
    let (code, _) = apply(
        &app,
        Some(&bearer(&hs256(&valid(json!("42"))))),
        r#"{"userId":42}"#,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_keys_verify_their_own_algorithm_only() {
    for (file, algorithm) in [
        ("rsa-public.pem", Algorithm::RS256),
        ("ec-public.pem", Algorithm::ES256),
        ("ed25519-public.pem", Algorithm::EdDSA),
    ] {
        let app = server(JwtKey::PublicKey(key_file(file)), JwtConfig::default()).await;
        let token = sign(
            algorithm,
            &private_key(algorithm),
            None,
            &claims(json!("carol")),
        );
        let (code, body) = apply(&app, Some(&bearer(&token)), "").await;
        assert_eq!(
            (code, &body["status"]),
            (StatusCode::OK, &json!("success")),
            "{file}: {body}"
        );
        let numeric = sign(
            algorithm,
            &private_key(algorithm),
            None,
            &claims(json!("7")),
        );
        assert_eq!(
            apply(&app, Some(&bearer(&numeric)), "").await.0,
            StatusCode::OK
        );

        // HS256 with the public key's own bytes as the secret: the classic confusion.
        let public = std::fs::read(key_file(file)).unwrap();
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
            None,
            &claims(json!("mallory")),
        );
        refused(&app, Some(&bearer(&confused)), "algorithm").await;
        // Another key of the same kind is not this key.
        if algorithm != Algorithm::ES256 {
            let es = sign(
                Algorithm::ES256,
                &private_key(Algorithm::ES256),
                None,
                &claims(json!("mallory")),
            );
            refused(&app, Some(&bearer(&es)), "algorithm").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_verify_with_keeps_it_from_starting() {
    for (key, why) in [
        (JwtKey::PublicKey(key_file("ec384-public.pem")), "P-256"),
        (JwtKey::PublicKey(key_file("missing.pem")), "cannot read"),
        (JwtKey::Secret(b"too short".to_vec()), "at least 32"),
    ] {
        let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let config = Config {
            identity: Identity::Jwt,
            jwt: JwtConfig {
                key: Some(key),
                ..JwtConfig::default()
            },
            ..config()
        };
        let err = coupon_http::serve(config, listener, std::future::pending())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains(why), "{err:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_picks_the_key_by_kid_and_is_read_again_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("coupon-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    let all: Value =
        serde_json::from_slice(&std::fs::read(key_file("jwks.json")).unwrap()).unwrap();
    let only_rsa = json!({"keys": [all["keys"][0]]});
    std::fs::write(&path, only_rsa.to_string()).unwrap();
    let app = server(JwtKey::Jwks(path.clone()), JwtConfig::default()).await;

    let rs = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256),
        Some("rsa-1"),
        &claims(json!("dave")),
    );
    assert_eq!(apply(&app, Some(&bearer(&rs)), "").await.0, StatusCode::OK);
    let es = sign(
        Algorithm::ES256,
        &private_key(Algorithm::ES256),
        Some("ec-1"),
        &claims(json!("erin")),
    );
    refused(&app, Some(&bearer(&es)), "kid").await;
    let unknown = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256),
        Some("rsa-9"),
        &claims(json!("erin")),
    );
    refused(&app, Some(&bearer(&unknown)), "kid").await;
    let no_kid = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256),
        None,
        &claims(json!("erin")),
    );
    refused(&app, Some(&bearer(&no_kid)), "kid").await;
    // The RSA key under its kid, but HS256 over the JWK's text: refused.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(all["keys"][0].to_string().as_bytes()),
        Some("rsa-1"),
        &claims(json!("mallory")),
    );
    refused(&app, Some(&bearer(&confused)), "algorithm").await;

    // The file gains the EC and Ed25519 keys; the server takes them up without a restart.
    std::fs::write(&path, all.to_string()).unwrap();
    coupon_testkit::eventually(
        Duration::from_secs(10),
        "the new JWKS to be read",
        || async { apply(&app, Some(&bearer(&es)), "").await.0 == StatusCode::OK },
    )
    .await;
    let ed = sign(
        Algorithm::EdDSA,
        &private_key(Algorithm::EdDSA),
        Some("ed-1"),
        &claims(json!("frank")),
    );
    assert_eq!(apply(&app, Some(&bearer(&ed)), "").await.0, StatusCode::OK);

    // The RSA key is withdrawn: dave's token, verified (and remembered) before, stops passing.
    assert_eq!(
        apply(&app, Some(&bearer(&rs)), "").await.0,
        StatusCode::CONFLICT
    );
    let without_rsa = json!({"keys": [all["keys"][1], all["keys"][2]]});
    std::fs::write(&path, without_rsa.to_string()).unwrap();
    coupon_testkit::eventually(
        Duration::from_secs(10),
        "the withdrawn key's token to be refused",
        || async { apply(&app, Some(&bearer(&rs)), "").await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;
    refused(&app, Some(&bearer(&rs)), "kid").await;
    assert_eq!(
        apply(&app, Some(&bearer(&es)), "").await.0,
        StatusCode::CONFLICT
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_still_expires() {
    let app = server(
        JwtKey::PublicKey(key_file("ec-public.pem")),
        JwtConfig {
            leeway: Duration::ZERO,
            ..JwtConfig::default()
        },
    )
    .await;
    let short = json!({"sub": "grace", "iat": now(), "exp": now() + 2});
    let token = sign(
        Algorithm::ES256,
        &private_key(Algorithm::ES256),
        None,
        &short,
    );
    // Verified once, then answered from memory while it lasts, then refused as expired.
    assert_eq!(
        apply(&app, Some(&bearer(&token)), "").await.0,
        StatusCode::OK
    );
    coupon_testkit::eventually(
        Duration::from_secs(10),
        "the remembered token to expire",
        || async { apply(&app, Some(&bearer(&token)), "").await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;
    refused(&app, Some(&bearer(&token)), "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_for_the_token_user_and_others_only_to_the_admin() {
    let app = server(JwtKey::Secret(SECRET.to_vec()), JwtConfig::default()).await;
    let alice = bearer(&hs256(&claims(json!("alice"))));
    assert_eq!(apply(&app, Some(&alice), "").await.0, StatusCode::OK);

    let (code, body) = app
        .call(
            Method::GET,
            "/api/campaigns/default/me",
            &[("authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(
        (code, &body["userId"], &body["admitted"], &body["seq"]),
        (StatusCode::OK, &json!("alice"), &json!(true), &json!(1)),
        "{body}"
    );
    let (code, _) = app
        .call(Method::GET, "/api/campaigns/default/me", &[], "")
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Anyone else's admission: not with a user's token, nor without one; with the admin token.
    let path = "/api/campaigns/default/users/alice";
    let (code, _) = app.call(Method::GET, path, &[], "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = app
        .call(Method::GET, path, &[("authorization", &alice)], "")
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let admin = format!("bearer {ADMIN_TOKEN}");
    let (code, body) = app
        .call(Method::GET, path, &[("authorization", &admin)], "")
        .await;
    assert_eq!((code, &body["seq"]), (StatusCode::OK, &json!(1)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_burst_meets_429_with_retry_after() {
    // A burst of ten, refilled at one a second: what passes is judged against how long the
    // requests took by the test's own clock, so a slow machine gets its due refills and no more.
    const BURST: u32 = 10;
    const PER_SECOND: u32 = 1;
    let app = TestApp::start(Config {
        identity: Identity::Jwt,
        jwt: JwtConfig {
            key: Some(JwtKey::Secret(SECRET.to_vec())),
            ..JwtConfig::default()
        },
        user_rate: PER_SECOND,
        user_burst: BURST.try_into().unwrap(),
        ..config()
    })
    .await;
    let token = bearer(&hs256(&claims(json!("eager"))));
    let headers = [("authorization", token.as_str())];
    let mut codes = Vec::new();
    let mut retry_after = None;
    let started = std::time::Instant::now();
    // Sequential requests until the limit answers; a hundred are far more than a limiter
    // refilling one a second lets through while they are sent.
    while retry_after.is_none() && codes.len() < 100 {
        let response =
            support::raw_call(app.addr, Method::POST, "/api/coupons/apply", &headers, "").await;
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.body["status"], "rate_limited", "{}", response.body);
            retry_after = response.headers.get("retry-after").cloned();
            assert!(retry_after.is_some(), "a 429 without Retry-After");
        }
        codes.push(response.status.as_u16());
    }
    let took = started.elapsed();
    let passed = codes.iter().filter(|&&c| c != 429).count();
    // At most the burst and one refill per whole second the requests took (on a machine that
    // sends them within the first second: exactly the burst).
    let allowed = BURST as usize + (took.as_secs_f64() * f64::from(PER_SECOND)).floor() as usize;
    println!(
        "{} requests in {took:?}: {passed} passed the limit",
        codes.len()
    );
    assert!(
        codes[..BURST as usize].iter().all(|&c| c != 429),
        "the burst passes: {codes:?}"
    );
    assert!(
        passed <= allowed,
        "{passed} passed in {took:?}, at most {allowed} may: {codes:?}"
    );
    // One success, then duplicates, then the limit.
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|&&c| c == 409).count(),
        passed - 1,
        "{codes:?}"
    );
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    let retry_after: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // Another user is not held back by the first one's limit.
    let other = bearer(&hs256(&claims(json!("patient"))));
    assert_eq!(apply(&app, Some(&other), "").await.0, StatusCode::OK);
}

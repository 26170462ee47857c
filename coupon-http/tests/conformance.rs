//! Where HTTP's RFCs and `openapi.yaml` say what the server must answer, on real sockets: a
//! `userId` of `null` is no user, path segments are percent-decoded and text that reads as a
//! number is no user id in a path, a long URI meets the head limit (431) and only beyond 65,534
//! bytes 414, an HTTP/2 preface is told in HTTP/2 frames that HTTP/1.1 is required, and heads
//! that readers could take in two ways (no `Host`, two `Host`s, two `Authorization`s) are refused
//! with 400 and change nothing.

mod support;

use std::net::SocketAddr;

use coupon_http::{Config, Identity, JwtConfig, JwtKey};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestApp, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &[u8] = b"a test secret of more than thirty-two bytes";

/// A server in jwt mode with an HS256 secret, and no per-user limit.
async fn jwt_app() -> TestApp {
    TestApp::start(Config {
        identity: Identity::Jwt,
        jwt: JwtConfig {
            key: Some(JwtKey::Secret(SECRET.to_vec())),
            ..JwtConfig::default()
        },
        ..config()
    })
    .await
}

/// `Bearer <token>` for `user`, valid for an hour.
fn bearer(user: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "iat": now, "exp": now + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// Sends `request` as it is and returns everything the server sends until it closes (at most
/// 10 s).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code and JSON body of a raw answer.
fn parse(answer: &str) -> (u16, Value) {
    let code = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    (code, support::body_of(answer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_user_id_is_no_user_in_either_mode() {
    let json = [("content-type", "application/json")];
    let jwt = jwt_app().await;
    let before = jwt.snapshot().await;
    let token = bearer("alice");
    let headers = [json[0], ("authorization", token.as_str())];
    let (code, body) = jwt
        .call(
            Method::POST,
            "/api/coupons/apply",
            &headers,
            r#"{"userId":null}"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("got null"),
        "{body}"
    );
    assert_eq!(
        jwt.snapshot().await,
        before,
        "a refused application changes nothing"
    );
    // The token's own user, or none, still applies.
    let (code, body) = jwt
        .call(
            Method::POST,
            "/api/coupons/apply",
            &headers,
            r#"{"userId":"alice"}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let body_mode = TestApp::start(config()).await;
    let before = body_mode.snapshot().await;
    for body in [r#"{"userId":null}"#, "{}"] {
        let (code, answer) = body_mode
            .call(Method::POST, "/api/coupons/apply", &json, body)
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["status"], "error", "{answer}");
    }
    assert_eq!(body_mode.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ids_are_percent_decoded_and_numeric_looking_text_is_no_user() {
    // Body mode: the lookup of a user is open to every caller, as in the seed's API.
    let app = TestApp::start(config()).await;
    assert_eq!(app.apply(None, 42).await.0, StatusCode::OK);
    for user in ["0", "-1", "1.5", "007", "-0.5"] {
        let path = format!("/api/campaigns/default/users/{user}");
        let (code, body) = app.call(Method::GET, &path, &[], "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{user}: {body}");
        assert_eq!(body["status"], "error", "{body}");
    }
    let json = [("content-type", "application/json")];
    let (code, body) = app
        .call(
            Method::POST,
            "/api/coupons/apply",
            &json,
            r#"{"userId":"auth0|x"}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // Percent-encoded segments are the same ids as plain ones (RFC 3986 §2.1).
    for (user, admitted) in [
        ("42", true),
        ("abc", false),
        ("1e5", false),
        ("auth0%7Cx", true),
        ("auth0%7cx", true),
        ("%34%32", true),
    ] {
        let path = format!("/api/campaigns/def%61ult/users/{user}");
        let (code, body) = app.call(Method::GET, &path, &[], "").await;
        assert_eq!(code, StatusCode::OK, "{user}: {body}");
        assert_eq!(body["admitted"], admitted, "{user}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_uri_meets_the_head_limit_and_414_only_beyond_what_hyper_takes() {
    let get = |target_len: usize| {
        format!(
            "GET /health?{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "a".repeat(target_len)
        )
    };
    let app = TestApp::start(config()).await;
    for len in [9_000, 70_000] {
        let (code, body) = parse(&exchange(app.addr, get(len).as_bytes()).await);
        assert_eq!(code, 431, "{len}: {body}");
        assert_eq!(body["status"], "error", "{body}");
    }
    // With room for a head of 128 KiB, a URI under hyper's 65,534 bytes is served, a longer one
    // is 414.
    let roomy = TestApp::start(Config {
        max_head_bytes: 128 * 1024,
        ..config()
    })
    .await;
    let (code, body) = parse(&exchange(roomy.addr, get(60_000).as_bytes()).await);
    assert_eq!((code, &body["status"]), (200, &json!("ok")), "{body}");
    let (code, body) = parse(&exchange(roomy.addr, get(70_000).as_bytes()).await);
    assert_eq!(code, 414, "{body}");
    assert_eq!(body["status"], "error", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_is_told_http_1_1_is_required_in_http2_frames() {
    let app = TestApp::start(config()).await;
    // The preface and an empty SETTINGS frame, as a client with prior knowledge opens.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&preface).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection")
    .unwrap();
    // The server's preface (SETTINGS), then GOAWAY: no stream processed, HTTP_1_1_REQUIRED
    // (RFC 9113 §7), and the JSON error as its debug data.
    assert_eq!(answer[..9], [0, 0, 0, 0x4, 0, 0, 0, 0, 0], "{answer:?}");
    let goaway = &answer[9..];
    let length = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
    assert_eq!((goaway[3], goaway.len()), (0x7, 9 + length), "{answer:?}");
    let (last_stream, error) = (&goaway[9..13], &goaway[13..17]);
    assert_eq!(
        (last_stream, error),
        (&[0, 0, 0, 0][..], &[0, 0, 0, 0xd][..])
    );
    let debug: Value = serde_json::from_slice(&goaway[17..]).unwrap();
    assert_eq!(debug["status"], "error", "{debug}");
    // HTTP/1.1 on the next connection is served as ever.
    let health = exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(parse(&health.await).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_could_be_read_two_ways_are_refused_and_change_nothing() {
    let app = jwt_app().await;
    let before = app.snapshot().await;
    let user = bearer("mallory");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let apply = |authorizations: &[&str]| {
        let mut request = String::from(
            "POST /api/coupons/apply HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n",
        );
        for value in authorizations {
            request.push_str(&format!("authorization: {value}\r\n"));
        }
        request + "\r\n"
    };
    let create = format!(
        "POST /api/campaigns HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: {admin}\r\nauthorization: {user}\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{{\"id\":\"sneaky\",\"quota\":10}}"
    );
    let cases: [(&str, String); 5] = [
        (
            "a valid token, then garbage",
            apply(&[&user, "Bearer garbage"]),
        ),
        (
            "garbage, then a valid token",
            apply(&["Bearer garbage", &user]),
        ),
        ("the admin token, then a user's", create),
        (
            "HTTP/1.1 without Host",
            "GET /health HTTP/1.1\r\nconnection: close\r\n\r\n".to_owned(),
        ),
        (
            "two Host headers",
            "GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n".to_owned(),
        ),
    ];
    for (what, request) in cases {
        let (code, body) = parse(&exchange(app.addr, request.as_bytes()).await);
        assert_eq!(code, 400, "{what}: {body}");
        assert_eq!(body["status"], "error", "{what}: {body}");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing was applied or created"
    );
    // HTTP/1.0 does not require Host; one valid token alone still applies.
    let old = exchange(app.addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(parse(&old).0, 200, "{old}");
    let (code, body) = parse(&exchange(app.addr, apply(&[&user]).as_bytes()).await);
    assert_eq!(code, 200, "{body}");
}

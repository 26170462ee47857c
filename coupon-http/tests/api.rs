//! The API through real HTTP on port 0: every outcome, and every kind of bad input answered
//! 4xx with a JSON error while Redis stays exactly as it was.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use coupon_http::Config;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, RedisServer, TestApp, config, quota};

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_has_its_status_and_code() {
    let app = TestApp::start(Config {
        default_quota: quota(2),
        ..config()
    })
    .await;
    let (code, body) = app.apply(None, 1).await;
    assert_eq!(
        (code, &body["status"], &body["seq"]),
        (StatusCode::OK, &json!("success"), &json!(1)),
        "{body}"
    );
    assert!(body["message"].is_string());
    assert_eq!(
        body["userId"],
        json!(1),
        "numeric ids are answered as numbers"
    );
    // The same user as a string is the same user.
    let (code, body) = app
        .call(
            Method::POST,
            "/api/coupons/apply",
            &[JSON],
            r#"{"userId":"1"}"#,
        )
        .await;
    assert_eq!(
        (code, &body["status"], &body["seq"]),
        (StatusCode::CONFLICT, &json!("duplicate"), &json!(1))
    );
    // An identity provider's subject.
    let (code, body) = app
        .call(
            Method::POST,
            "/api/coupons/apply",
            &[JSON],
            r#"{"userId":"auth0|5f3a9c"}"#,
        )
        .await;
    assert_eq!(
        (code, &body["status"], &body["userId"]),
        (StatusCode::OK, &json!("success"), &json!("auth0|5f3a9c")),
        "{body}"
    );
    let (code, body) = app.apply(None, 3).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::GONE, &json!("sold_out"))
    );

    let (code, body) = app
        .create(json!({"id": "later", "quota": 5, "opensAt": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::CREATED, &json!("created")),
        "{body}"
    );
    let (code, body) = app.apply(Some("later"), 1).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::TOO_EARLY, &json!("not_open"))
    );

    let window = json!({"id": "over", "quota": 5, "opensAt": "2020-01-01T00:00:00+09:00", "closesAt": "2020-01-02T00:00:00+09:00"});
    assert_eq!(app.create(window.clone()).await.0, StatusCode::CREATED);
    let (code, body) = app.create(window).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::OK, &json!("unchanged"))
    );
    let (code, body) = app.apply(Some("over"), 1).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::FORBIDDEN, &json!("closed"))
    );

    let (code, body) = app.apply(Some("nowhere"), 1).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::NOT_FOUND, &json!("unknown_campaign"))
    );

    // Raising a quota, refusing to lower it below what was issued.
    assert_eq!(
        app.create(json!({"id": "grow", "quota": 1})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(app.apply(Some("grow"), 10).await.0, StatusCode::OK);
    let (code, body) = app.create(json!({"id": "grow", "quota": 3})).await;
    assert_eq!((code, &body["status"]), (StatusCode::OK, &json!("updated")));
    let (code, body) = app.apply(Some("grow"), 11).await;
    assert_eq!((code, &body["seq"]), (StatusCode::OK, &json!(2)));
    assert_eq!(
        app.create(json!({"id": "grow", "quota": 2})).await.0,
        StatusCode::OK
    );
    let (code, body) = app.create(json!({"id": "grow", "quota": 1})).await;
    assert_eq!(
        (code, &body["status"], &body["issued"]),
        (
            StatusCode::CONFLICT,
            &json!("quota_below_issued"),
            &json!(2)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_status_user_lookup_health_and_ready() {
    let app = TestApp::start(config()).await;
    let definition = json!({"id": "spring-sale", "quota": 3, "opensAt": "2026-01-01T00:00:00Z", "closesAt": "2999-01-01T00:00:00Z"});
    assert_eq!(app.create(definition).await.0, StatusCode::CREATED);
    app.apply(Some("spring-sale"), 42).await;

    let (code, body) = app
        .call(Method::GET, "/api/campaigns/spring-sale", &[], "")
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "success", "id": "spring-sale", "quota": 3, "issued": 1, "remaining": 2,
               "opensAt": "2026-01-01T00:00:00Z", "closesAt": "2999-01-01T00:00:00Z",
               "opening": "race", "queueOpensAt": null, "queued": 0, "drawn": false})
    );
    let (code, body) = app
        .call(Method::GET, "/api/campaigns/spring-sale/users/42", &[], "")
        .await;
    assert_eq!(
        (code, &body["admitted"], &body["seq"]),
        (StatusCode::OK, &json!(true), &json!(1))
    );
    let (code, body) = app
        .call(Method::GET, "/api/campaigns/spring-sale/users/43", &[], "")
        .await;
    assert_eq!(
        (code, &body["admitted"], &body["seq"]),
        (StatusCode::OK, &json!(false), &Value::Null)
    );
    let (code, body) = app
        .call(Method::GET, "/api/campaigns/nowhere", &[], "")
        .await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::NOT_FOUND, &json!("unknown_campaign"))
    );
    let (code, body) = app
        .call(Method::GET, "/api/campaigns/nowhere/users/1", &[], "")
        .await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::NOT_FOUND, &json!("unknown_campaign"))
    );

    assert_eq!(
        app.call(Method::GET, "/health", &[], "").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (code, body) = app.call(Method::GET, "/ready", &[], "").await;
    assert_eq!(
        (code, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "redis": true, "relay": true})
        )
    );
}

/// Sends `body` and checks the answer is `code` with a JSON error, and that Redis is unchanged.
async fn refused(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    code: StatusCode,
) {
    let before = app.snapshot().await;
    let (got, answer) = app
        .call(method.clone(), path, headers, body.to_owned())
        .await;
    assert_eq!(got, code, "{method} {path} {body:?}: {answer}");
    assert_eq!(
        answer["status"], "error",
        "{method} {path} {body:?}: {answer}"
    );
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "{method} {path} {body:?} changed Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_apply_requests_are_refused_without_touching_redis() {
    let app = TestApp::start(config()).await;
    app.apply(None, 1).await; // some state to keep unchanged
    app.drained("default").await;
    let apply = "/api/coupons/apply";
    let bad_bodies = [
        "",
        "   ",
        r#"{"userId":"#,
        "not json",
        "[1]",
        "1",
        r#""userId""#,
        "null",
        "{}",
        r#"{"user":5}"#,
        r#"{"userId":null}"#,
        r#"{"userId":""}"#,
        r#"{"userId":"0"}"#,
        r#"{"userId":"-5"}"#,
        r#"{"userId":"5.5"}"#,
        r#"{"userId":"007"}"#,
        r#"{"userId":"a b"}"#,
        r#"{"userId":"a/b"}"#,
        r#"{"userId":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        r#"{"userId":5.5}"#,
        r#"{"userId":5.0}"#,
        r#"{"userId":0}"#,
        r#"{"userId":-5}"#,
        r#"{"userId":9223372036854775808}"#,
        r#"{"userId":18446744073709551616}"#,
        r#"{"userId":1e3}"#,
        r#"{"userId":true}"#,
        r#"{"userId":[5]}"#,
        r#"{"userId":5,"userId":6}"#,
        r#"{"userId":5} {"userId":6}"#,
    ];
    for body in bad_bodies {
        refused(
            &app,
            Method::POST,
            apply,
            &[JSON],
            body,
            StatusCode::BAD_REQUEST,
        )
        .await;
        refused(
            &app,
            Method::POST,
            "/api/campaigns/default/apply",
            &[JSON],
            body,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let good = r#"{"userId":5}"#;
    refused(
        &app,
        Method::POST,
        apply,
        &[],
        good,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    refused(
        &app,
        Method::POST,
        apply,
        &[("content-type", "text/plain")],
        good,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    refused(
        &app,
        Method::POST,
        apply,
        &[("content-type", "application/x-www-form-urlencoded")],
        "userId=5",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let huge = format!(r#"{{"userId":5,"pad":"{}"}}"#, "x".repeat(5000));
    refused(
        &app,
        Method::POST,
        apply,
        &[JSON],
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    for bad_id in [
        "UPPER",
        "under_score_ok_but-!",
        "%7Bx%7D",
        "a%20b",
        &"x".repeat(65),
        "-lead",
    ] {
        refused(
            &app,
            Method::POST,
            &format!("/api/campaigns/{bad_id}/apply"),
            &[JSON],
            good,
            StatusCode::BAD_REQUEST,
        )
        .await;
        refused(
            &app,
            Method::GET,
            &format!("/api/campaigns/{bad_id}"),
            &[],
            "",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let too_long = "x".repeat(65);
    for bad_user in [
        "0",
        "-1",
        "007",
        "a%20b",
        "1.5",
        "9223372036854775808",
        "+1",
        too_long.as_str(),
    ] {
        refused(
            &app,
            Method::GET,
            &format!("/api/campaigns/default/users/{bad_user}"),
            &[],
            "",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for path in [
        "/",
        "/api",
        "/api/coupons",
        "/api/coupons/apply/x",
        "/api/campaigns/default/users",
        "/nope",
    ] {
        refused(
            &app,
            Method::POST,
            path,
            &[JSON],
            good,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    refused(
        &app,
        Method::GET,
        apply,
        &[],
        "",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    refused(
        &app,
        Method::PUT,
        "/api/campaigns/default/apply",
        &[JSON],
        good,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    refused(
        &app,
        Method::DELETE,
        "/api/campaigns/default",
        &[],
        "",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    refused(
        &app,
        Method::POST,
        "/health",
        &[],
        "",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_refused_while_reading() {
    let app = TestApp::start(config()).await;
    let before = app.snapshot().await;
    let addr = app.addr;
    // No Content-Length: the limit must hold while the body streams in.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "POST /api/coupons/apply HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        let chunk = "x".repeat(1024);
        for _ in 0..16 {
            if write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
                break; // the server may close as soon as it has answered
            }
        }
        let _ = write!(stream, "0\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""status":"error""#), "{answer}");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_are_refused_without_touching_redis() {
    let app = TestApp::start(config()).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let admin = [JSON, ("authorization", auth.as_str())];
    let ok = r#"{"id":"fresh","quota":5}"#;
    let path = "/api/campaigns";

    refused(
        &app,
        Method::POST,
        path,
        &[JSON],
        ok,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    refused(
        &app,
        Method::POST,
        path,
        &[JSON, ("authorization", "Basic dXNlcjpwYXNz")],
        ok,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    refused(
        &app,
        Method::POST,
        path,
        &[JSON, ("authorization", "Bearer wrong")],
        ok,
        StatusCode::FORBIDDEN,
    )
    .await;
    refused(
        &app,
        Method::POST,
        path,
        &[JSON, ("authorization", "Bearer test-admin-tokenX")],
        ok,
        StatusCode::FORBIDDEN,
    )
    .await;
    for body in [
        r#"{"id":"fresh","quota":0}"#,
        r#"{"id":"fresh","quota":-3}"#,
        r#"{"id":"fresh","quota":"5"}"#,
        r#"{"id":"fresh","quota":1.5}"#,
        r#"{"id":"fresh","quota":4294967296}"#,
        r#"{"id":"fresh"}"#,
        r#"{"quota":5}"#,
        r#"{"id":"Fresh!","quota":5}"#,
        r#"{"id":"fresh","quota":5,"quotaa":6}"#,
        r#"{"id":"fresh","quota":5,"opensAt":"tomorrow"}"#,
        r#"{"id":"fresh","quota":5,"opensAt":"2026-02-01T00:00:00Z","closesAt":"2026-01-01T00:00:00Z"}"#,
        r#"{"id":"fresh","quota":5,"opensAt":"2026-02-01T00:00:00Z","closesAt":"2026-02-01T00:00:00Z"}"#,
        r#"{"id":"fresh","quota":5,"id":"other"}"#,
        "[]",
    ] {
        refused(
            &app,
            Method::POST,
            path,
            &admin,
            body,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    refused(
        &app,
        Method::PUT,
        path,
        &admin,
        "",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;

    let disabled = TestApp::start(Config {
        admin_token: None,
        ..config()
    })
    .await;
    refused(
        &disabled,
        Method::POST,
        path,
        &admin,
        ok,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_503_with_a_retry_hint() {
    let redis = RedisServer::start();
    let app = TestApp::start(Config {
        redis: coupon_cli::Redis::server(redis.url()),
        redis_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    assert_eq!(app.apply(None, 1).await.0, StatusCode::OK);
    drop(redis); // kills the test's own redis-server

    for user in [1, 2] {
        let (code, body) = app.apply(None, user).await;
        assert_eq!(
            (code, &body["status"]),
            (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
            "{body}"
        );
    }
    let (code, body) = app.call(Method::GET, "/ready", &[], "").await;
    assert_eq!(
        (code, &body["redis"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(false))
    );
    // Bad input is still refused as bad input, not as unavailable.
    let (code, _) = app
        .call(
            Method::POST,
            "/api/coupons/apply",
            &[JSON],
            r#"{"userId":0}"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

/// A fault is not an outage: a campaign whose keys something else overwrote makes Redis refuse
/// the gate's commands, which a retry would meet again, so it answers 500, not 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_answers_500_not_503() {
    let app = TestApp::start(config()).await;
    app.break_campaign("broken").await;
    let (code, body) = app.apply(Some("broken"), 1).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::INTERNAL_SERVER_ERROR, &json!("error")),
        "{body}"
    );
    let (code, body) = app
        .call(Method::GET, "/api/campaigns/broken", &[], "")
        .await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // The server goes on answering everything else.
    assert_eq!(app.apply(None, 1).await.0, StatusCode::OK);
}

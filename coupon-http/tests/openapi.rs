//! `openapi.yaml` stays true: every operation it lists is served, and every answer the server
//! gives on a tour of all outcomes and kinds of bad input is documented for its operation and
//! code, with the body matching the documented schema (required fields, types, `status` enum).

mod support;

use std::time::Duration;

use coupon_http::Config;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, RedisServer, TestApp, config, quota};

fn spec() -> Value {
    serde_norway::from_str(include_str!("../openapi.yaml")).expect("openapi.yaml is valid YAML")
}

/// Follows `$ref`s within the document.
fn resolve<'a>(spec: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    value
}

/// Whether `value` has the type `schema` names (any, if it names none).
fn type_matches(schema: &Value, value: &Value, at: &str) -> bool {
    match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("{at}: schema type {other} not handled by this test"),
        None => true,
    }
}

fn check_value(spec: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(spec, schema);
    if value.is_null() {
        assert_eq!(
            schema["nullable"], true,
            "{at}: null where the schema does not allow it"
        );
        return;
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        // The alternatives this spec uses differ by type: check the one of the value's type.
        let of_type: Vec<_> = alternatives
            .iter()
            .filter(|alternative| type_matches(resolve(spec, alternative), value, at))
            .collect();
        assert_eq!(
            of_type.len(),
            1,
            "{at}: {value} is of {} oneOf types",
            of_type.len()
        );
        return check_value(spec, of_type[0], value, at);
    }
    assert!(
        type_matches(schema, value, at),
        "{at}: {value} is not of type {}",
        schema["type"]
    );
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at}: {value} is not one of {allowed:?}"
        );
    }
    if let Some(required) = schema["required"].as_array() {
        for field in required {
            let field = field.as_str().unwrap();
            assert!(
                value.get(field).is_some(),
                "{at}: required field {field} missing from {value}"
            );
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object())
    {
        for (name, field) in object {
            match properties.get(name) {
                Some(property) => check_value(spec, property, field, &format!("{at}.{name}")),
                None => panic!("{at}: field {name} is not documented"),
            }
        }
    }
}

/// Checks that `answer` (with `code`) is documented for `method template`.
fn check(spec: &Value, method: &Method, template: &str, code: StatusCode, answer: &Value) {
    let at = format!("{method} {template} -> {code}");
    let operation = &spec["paths"][template][method.as_str().to_lowercase()];
    assert!(operation.is_object(), "{at}: operation not in openapi.yaml");
    let response = operation["responses"]
        .get(code.as_str())
        .unwrap_or_else(|| panic!("{at}: code not documented"));
    let schema = &resolve(spec, response)["content"]["application/json"]["schema"];
    check_value(spec, schema, answer, &at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let spec = spec();
    let app = TestApp::start(config()).await;
    for (template, operations) in spec["paths"].as_object().unwrap() {
        let path = template.replace("{id}", "default").replace("{userId}", "1");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let (code, answer) = app
                .call(
                    method.clone(),
                    &path,
                    &[("content-type", "application/json")],
                    "{}",
                )
                .await;
            assert_ne!(
                code,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template}: {answer}"
            );
            let routed = !(code == StatusCode::NOT_FOUND
                && answer["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no endpoint")));
            assert!(routed, "{method} {template} is documented but not served");
        }
    }
}

/// One request of the tour: method, documented path template, concrete path, headers, body.
type Step<'a> = (Method, &'a str, String, Vec<(&'a str, &'a str)>, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_on_a_tour_is_documented() {
    let spec = spec();
    let app = TestApp::start(Config {
        default_quota: quota(1),
        ..config()
    })
    .await;
    let json_type = ("content-type", "application/json");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let admin = [json_type, ("authorization", auth.as_str())];
    let big = format!(r#"{{"userId":1,"pad":"{}"}}"#, "x".repeat(5000));

    let tour: Vec<Step> = vec![
        (
            Method::GET,
            "/health",
            "/health".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/ready",
            "/ready".into(),
            vec![],
            String::new(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![json_type],
            r#"{"userId":2}"#.into(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![json_type],
            r#"{"userId":0}"#.into(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/coupons/apply",
            "/api/coupons/apply".into(),
            vec![json_type],
            big,
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            admin.to_vec(),
            r#"{"id":"later","quota":2,"opensAt":"2999-01-01T00:00:00Z"}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            admin.to_vec(),
            r#"{"id":"later","quota":2,"opensAt":"2999-01-01T00:00:00Z"}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            admin.to_vec(),
            r#"{"id":"over","quota":2,"closesAt":"2020-01-01T00:00:00Z"}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            admin.to_vec(),
            r#"{"id":"default","quota":3}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            admin.to_vec(),
            r#"{"id":"default","quota":0}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            vec![json_type],
            r#"{"id":"x","quota":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns",
            "/api/campaigns".into(),
            vec![json_type, ("authorization", "Bearer no")],
            r#"{"id":"x","quota":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns/{id}/apply",
            "/api/campaigns/later/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns/{id}/apply",
            "/api/campaigns/over/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns/{id}/apply",
            "/api/campaigns/nowhere/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::POST,
            "/api/campaigns/{id}/apply",
            "/api/campaigns/BAD/apply".into(),
            vec![json_type],
            r#"{"userId":1}"#.into(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}",
            "/api/campaigns/default".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}",
            "/api/campaigns/later".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}",
            "/api/campaigns/nowhere".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}",
            "/api/campaigns/BAD".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}/users/{userId}",
            "/api/campaigns/default/users/1".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}/users/{userId}",
            "/api/campaigns/default/users/2".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}/users/{userId}",
            "/api/campaigns/nowhere/users/2".into(),
            vec![],
            String::new(),
        ),
        (
            Method::GET,
            "/api/campaigns/{id}/users/{userId}",
            "/api/campaigns/default/users/0".into(),
            vec![],
            String::new(),
        ),
    ];
    let mut codes = std::collections::BTreeSet::new();
    for (method, template, path, headers, body) in tour {
        let (code, answer) = app.call(method.clone(), &path, &headers, body).await;
        check(&spec, &method, template, code, &answer);
        codes.insert(code.as_u16());
    }
    // The tour reaches every outcome, so the checks above covered each documented shape.
    for code in [200, 201, 400, 401, 403, 404, 409, 410, 413, 415, 425] {
        assert!(
            codes.contains(&code),
            "the tour never saw {code}: {codes:?}"
        );
    }

    // 500 for a campaign whose keys something else overwrote: Redis refuses the gate's command.
    app.break_campaign("broken").await;
    for (method, template, path, body) in [
        (
            Method::POST,
            "/api/campaigns/{id}/apply",
            "/api/campaigns/broken/apply",
            r#"{"userId":1}"#,
        ),
        (
            Method::GET,
            "/api/campaigns/{id}",
            "/api/campaigns/broken",
            "",
        ),
    ] {
        let (code, answer) = app.call(method.clone(), path, &[json_type], body).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {answer}");
        check(&spec, &method, template, code, &answer);
    }

    // 503 for both readiness and a request, from an app whose own Redis was killed.
    let redis = RedisServer::start();
    let down = TestApp::start(Config {
        redis_url: redis.url(),
        redis_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    drop(redis);
    let (code, answer) = down
        .call(
            Method::POST,
            "/api/coupons/apply",
            &[json_type],
            r#"{"userId":1}"#,
        )
        .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    check(&spec, &Method::POST, "/api/coupons/apply", code, &answer);
    let (code, answer) = down.call(Method::GET, "/ready", &[], "").await;
    assert_eq!(
        (code, &answer["status"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable"))
    );
    check(&spec, &Method::GET, "/ready", code, &answer);
}

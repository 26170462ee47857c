//! Draw campaigns over HTTP: bad definitions refused with nothing created, the pre-queue's
//! `202 queued` with its `Retry-After`, the locked opening, and the draw running by itself at
//! `opensAt`, then answering winners, the others and late comers truly.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApp, config, eventually};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now plus `seconds` (may be negative), as RFC 3339.
fn at(seconds: f64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds_f64(seconds))
        .format(&Rfc3339)
        .unwrap()
}

async fn campaign(app: &TestApp, id: &str) -> (StatusCode, Value) {
    app.call(Method::GET, &format!("/api/campaigns/{id}"), &[], "")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_draw_definitions_are_refused_and_create_nothing() {
    let app = TestApp::start(config()).await;
    let before = app.snapshot().await;
    for (definition, says) in [
        (
            json!({"id": "d", "quota": 5, "queueOpensAt": at(-1.0), "opensAt": at(60.0)}),
            "queueOpensAt is for a draw",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "race", "queueOpensAt": at(-1.0), "opensAt": at(60.0)}),
            "queueOpensAt is for a draw",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "lottery", "opensAt": at(60.0)}),
            "opening must be",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "draw", "opensAt": at(60.0)}),
            "a draw needs queueOpensAt",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "draw", "queueOpensAt": at(-1.0)}),
            "a draw needs opensAt",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "draw", "queueOpensAt": at(60.0), "opensAt": at(60.0)}),
            "its queue must open before it",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": "draw", "queueOpensAt": "soon", "opensAt": at(60.0)}),
            "queueOpensAt must be an RFC 3339 time",
        ),
        (
            json!({"id": "d", "quota": 5, "opening": 1, "queueOpensAt": at(-1.0), "opensAt": at(60.0)}),
            "",
        ),
    ] {
        let (code, body) = app.create(definition.clone()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{definition}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{definition}: {message}");
    }
    assert_eq!(campaign(&app, "d").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.snapshot().await, before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_queue_answers_queued_then_draws_by_itself_at_opens_at() {
    let app = TestApp::start(config()).await;
    let opens = at(5.0);
    let definition = json!({"id": "drop", "quota": 3, "opening": "draw",
                            "queueOpensAt": at(-60.0), "opensAt": opens});
    let (code, body) = app.create(definition.clone()).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(
        (&body["opening"], &body["queueOpensAt"].is_string()),
        (&json!("draw"), &true)
    );

    // Five users join, the first two twice: still five in the queue.
    for user in [1, 2, 1, 2, 3, 4, 5] {
        let answer = support::raw_call(
            app.addr,
            Method::POST,
            "/api/campaigns/drop/apply",
            &[("content-type", "application/json")],
            format!(r#"{{"userId":{user}}}"#),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        let body = &answer.body;
        assert_eq!(
            (&body["status"], &body["userId"], &body["campaignId"]),
            (&json!("queued"), &json!(user), &json!("drop"))
        );
        let draw_at = OffsetDateTime::parse(body["drawAt"].as_str().unwrap(), &Rfc3339).unwrap();
        let until = (draw_at - OffsetDateTime::now_utc()).as_seconds_f64();
        let retry: f64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            retry >= until + 1.0 && retry <= until.ceil() + 5.0,
            "Retry-After {retry} for a draw in {until:.1} s"
        );
    }
    let (_, status) = campaign(&app, "drop").await;
    assert_eq!(
        (
            &status["opening"],
            &status["queued"],
            &status["drawn"],
            &status["issued"]
        ),
        (&json!("draw"), &json!(5), &json!(false), &json!(0)),
        "{status}"
    );
    let (_, me) = app
        .call(Method::GET, "/api/campaigns/drop/users/4", &[], "")
        .await;
    assert_eq!(
        (&me["queued"], &me["admitted"]),
        (&json!(true), &json!(false))
    );

    // How it opens is fixed now that the queue is open.
    let mut as_race = definition.clone();
    as_race["opening"] = json!("race");
    as_race.as_object_mut().unwrap().remove("queueOpensAt");
    let (code, body) = app.create(as_race).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::CONFLICT, &json!("opening_locked")),
        "{body}"
    );
    assert_eq!(campaign(&app, "drop").await.1["opening"], json!("draw"));

    // Nobody applies: the draw runs by itself once opensAt has passed.
    eventually(Duration::from_secs(15), "the draw", || async {
        campaign(&app, "drop").await.1["drawn"] == json!(true)
    })
    .await;
    let (_, status) = campaign(&app, "drop").await;
    assert_eq!(
        (&status["queued"], &status["issued"], &status["remaining"]),
        (&json!(5), &json!(3), &json!(0))
    );
    let mut winners = Vec::new();
    for user in 1..=5 {
        let (_, me) = app
            .call(
                Method::GET,
                &format!("/api/campaigns/drop/users/{user}"),
                &[],
                "",
            )
            .await;
        assert_eq!(me["queued"], json!(false), "the queue is gone once drawn");
        let (code, body) = app.apply(Some("drop"), user).await;
        if me["admitted"] == json!(true) {
            assert_eq!(
                (code, &body["status"], &body["seq"]),
                (StatusCode::CONFLICT, &json!("duplicate"), &me["seq"])
            );
            winners.push(me["seq"].as_u64().unwrap());
        } else {
            assert_eq!(
                (code, &body["status"]),
                (StatusCode::GONE, &json!("sold_out"))
            );
        }
    }
    winners.sort_unstable();
    assert_eq!(winners, [1, 2, 3]);
    let (code, body) = app.apply(Some("drop"), 6).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::GONE, &json!("sold_out"))
    );
    app.drained("drop").await;
}

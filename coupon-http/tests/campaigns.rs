//! The admin calls of a campaign's life: the page of campaigns with their stages, taking a
//! coupon back (`DELETE /api/campaigns/{id}/users/{userId}`) and ending a campaign early
//! (`POST /api/campaigns/{id}/close`), each refused without the admin token and for bad input,
//! changing nothing then; and the sold-out memory giving way to both.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    ADMIN_TOKEN, RedisServer, TestApp, brokers, config, read_topic, remembering, status,
    until_answered_locally,
};

const AUTH: &str = concat!("Bearer ", "test-admin-token");

async fn admin(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    assert_eq!(AUTH, format!("Bearer {ADMIN_TOKEN}"));
    app.call(method, path, &[("authorization", AUTH)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_taken_back_goes_to_the_next_applicant_and_to_the_topic() {
    let app = TestApp::start(config()).await;
    app.create(json!({"id": "refund", "quota": 2})).await;
    for user in [1, 2] {
        assert_eq!(
            status(&app.apply(Some("refund"), user).await),
            (StatusCode::OK, "success")
        );
    }
    app.drained("refund").await;
    let before = app.snapshot().await;

    // Refused, nothing changed.
    for (headers, code) in [
        (&[][..], StatusCode::UNAUTHORIZED),
        (
            &[("authorization", "Bearer wrong")][..],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let answer = app
            .call(Method::DELETE, "/api/campaigns/refund/users/1", headers, "")
            .await;
        assert_eq!(status(&answer), (code, "error"), "{}", answer.1);
    }
    for (path, code, expected) in [
        (
            "/api/campaigns/refund/users/0",
            StatusCode::BAD_REQUEST,
            "error",
        ),
        (
            "/api/campaigns/Bad!/users/1",
            StatusCode::BAD_REQUEST,
            "error",
        ),
        (
            "/api/campaigns/nope/users/1",
            StatusCode::NOT_FOUND,
            "unknown_campaign",
        ),
        (
            "/api/campaigns/refund/users/3",
            StatusCode::NOT_FOUND,
            "not_a_holder",
        ),
    ] {
        let answer = admin(&app, Method::DELETE, path).await;
        assert_eq!(status(&answer), (code, expected), "{path}: {}", answer.1);
    }
    assert_eq!(app.snapshot().await, before, "refusals change nothing");

    let answer = admin(&app, Method::DELETE, "/api/campaigns/refund/users/1").await;
    assert_eq!(
        status(&answer),
        (StatusCode::OK, "released"),
        "{}",
        answer.1
    );
    assert_eq!(answer.1["seq"], 1);
    assert_eq!(answer.1["userId"], 1);
    let again = admin(&app, Method::DELETE, "/api/campaigns/refund/users/1").await;
    assert_eq!(
        status(&again),
        (StatusCode::NOT_FOUND, "not_a_holder"),
        "a second release changes nothing"
    );
    let lookup = app
        .call(Method::GET, "/api/campaigns/refund/users/1", &[], "")
        .await;
    assert_eq!(lookup.1["admitted"], false);

    // The freed seq goes to the next applicant; the released user applies as a new one.
    let next = app.apply(Some("refund"), 3).await;
    assert_eq!(status(&next), (StatusCode::OK, "success"));
    assert_eq!(next.1["seq"], 1);
    assert_eq!(
        status(&app.apply(Some("refund"), 1).await),
        (StatusCode::GONE, "sold_out")
    );

    // The release reached the topic once, between the admissions.
    app.drained("refund").await;
    let events: Vec<Value> = read_topic(&brokers(), &app.topic, 1, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|(_, payload)| serde_json::from_slice(&payload).unwrap())
        .collect();
    let released: Vec<_> = events.iter().filter(|e| e["event"] == "released").collect();
    assert_eq!(released.len(), 1, "{events:?}");
    assert_eq!(
        (released[0]["userId"].as_str(), released[0]["seq"].as_u64()),
        (Some("1"), Some(1))
    );
    assert_eq!(
        events.len(),
        4,
        "three admissions and one release: {events:?}"
    );
}

/// A process that answers a campaign sold out from memory hears of a release and of a close at
/// once (the time to live is a minute here): the freed seq is found, and a closed campaign is
/// answered closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sold_out_memory_gives_way_to_a_release_and_a_close() {
    let redis = RedisServer::start();
    let app = TestApp::start(remembering(redis.url())).await;
    app.create(json!({"id": "flash", "quota": 1})).await;
    assert_eq!(
        status(&app.apply(Some("flash"), 1).await),
        (StatusCode::OK, "success")
    );
    let mut user = 1;
    until_answered_locally(app.addr, &redis.url(), "flash", &mut user).await;
    let answer = admin(&app, Method::DELETE, "/api/campaigns/flash/users/1").await;
    assert_eq!(status(&answer), (StatusCode::OK, "released"));
    support::eventually(Duration::from_secs(10), "the freed seq found", || {
        user += 1;
        let app = &app;
        let user = 10_000 + user;
        async move {
            let answer = app.apply(Some("flash"), user).await;
            status(&answer) == (StatusCode::OK, "success")
        }
    })
    .await;

    until_answered_locally(app.addr, &redis.url(), "flash", &mut user).await;
    let answer = admin(&app, Method::POST, "/api/campaigns/flash/close").await;
    assert_eq!(status(&answer), (StatusCode::OK, "closed"), "{}", answer.1);
    support::eventually(Duration::from_secs(10), "closed told", || {
        user += 1;
        let app = &app;
        let user = 20_000 + user;
        async move {
            let answer = app.apply(Some("flash"), user).await;
            status(&answer) == (StatusCode::FORBIDDEN, "closed")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_campaign_answers_closed_and_keeps_its_definition() {
    let app = TestApp::start(config()).await;
    let definition = json!({"id": "early", "quota": 5});
    app.create(definition.clone()).await;
    assert_eq!(
        status(&app.apply(Some("early"), 1).await),
        (StatusCode::OK, "success")
    );
    app.drained("early").await;
    let before = app.snapshot().await;
    for (auth, code) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer no"), StatusCode::FORBIDDEN),
    ] {
        let headers: Vec<_> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let answer = app
            .call(Method::POST, "/api/campaigns/early/close", &headers, "")
            .await;
        assert_eq!(status(&answer), (code, "error"));
    }
    let unknown = admin(&app, Method::POST, "/api/campaigns/nope/close").await;
    assert_eq!(
        status(&unknown),
        (StatusCode::NOT_FOUND, "unknown_campaign")
    );
    let wrong = admin(&app, Method::GET, "/api/campaigns/early/close").await;
    assert_eq!(wrong.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.snapshot().await, before, "refusals change nothing");

    let closed = admin(&app, Method::POST, "/api/campaigns/early/close").await;
    assert_eq!(status(&closed), (StatusCode::OK, "closed"), "{}", closed.1);
    assert_eq!(closed.1["alreadyClosed"], false);
    assert_eq!(
        status(&app.apply(Some("early"), 2).await),
        (StatusCode::FORBIDDEN, "closed")
    );
    let again = admin(&app, Method::POST, "/api/campaigns/early/close").await;
    assert_eq!(again.1["alreadyClosed"], true);
    assert_eq!(again.1["closesAt"], closed.1["closesAt"]);
    let recreated = app.create(definition).await;
    assert_eq!(
        status(&recreated),
        (StatusCode::CONFLICT, "campaign_ended"),
        "the definition sent again does not reopen it"
    );
    let lookup = app
        .call(Method::GET, "/api/campaigns/early/users/1", &[], "")
        .await;
    assert_eq!(lookup.1["seq"], 1, "its holder keeps the coupon");
    let status_now = app.call(Method::GET, "/api/campaigns/early", &[], "").await;
    assert_eq!(status_now.1["closesAt"], closed.1["closesAt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_through_campaigns_with_their_states() {
    let app = TestApp::start(config()).await;
    app.create(json!({"id": "a-open", "quota": 3})).await;
    app.create(json!({"id": "b-sold", "quota": 1})).await;
    app.apply(Some("b-sold"), 1).await;
    app.create(json!({"id": "c-later", "quota": 3, "opensAt": "2999-01-01T00:00:00Z"}))
        .await;
    app.create(json!({"id": "d-ended", "quota": 3})).await;
    admin(&app, Method::POST, "/api/campaigns/d-ended/close").await;

    let (code, all) = admin(&app, Method::GET, "/api/campaigns").await;
    assert_eq!(code, StatusCode::OK, "{all}");
    let states: Vec<(String, String)> = all["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("a-open", "open"),
        ("b-sold", "sold_out"),
        ("c-later", "scheduled"),
        ("d-ended", "closed"),
        ("default", "open"), // the campaign every server creates at start
    ];
    assert_eq!(
        states,
        expected.map(|(id, state)| (id.to_owned(), state.to_owned()))
    );
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["campaigns"][1]["issued"], 1);

    // Pages of three: the first names where the second starts.
    let (_, first) = admin(&app, Method::GET, "/api/campaigns?limit=3").await;
    assert_eq!(first["campaigns"].as_array().unwrap().len(), 3);
    assert_eq!(first["next"], "c-later");
    let (_, second) = admin(&app, Method::GET, "/api/campaigns?limit=3&after=c-later").await;
    assert_eq!(second["campaigns"][0]["id"], "d-ended");
    assert_eq!(second["campaigns"].as_array().unwrap().len(), 2);
    assert_eq!(second["next"], Value::Null);

    for bad in [
        "?limit=0",
        "?limit=1001",
        "?after=Bad!",
        "?page=2",
        "?limit=2&limit=3",
    ] {
        let answer = admin(&app, Method::GET, &format!("/api/campaigns{bad}")).await;
        assert_eq!(status(&answer), (StatusCode::BAD_REQUEST, "error"), "{bad}");
    }
    let anonymous = app.call(Method::GET, "/api/campaigns", &[], "").await;
    assert_eq!(status(&anonymous), (StatusCode::UNAUTHORIZED, "error"));
    let wrong = admin(&app, Method::DELETE, "/api/campaigns").await;
    assert_eq!(wrong.0, StatusCode::METHOD_NOT_ALLOWED);
}

/// `POST /api/campaigns/{id}/archive` against a database the sink has not set up (no coupon
/// rows): refused while the campaign is open or while MySQL lacks its holders, with the reason
/// and nothing changed; a settled campaign is archived, and its tombstone answers `archived`
/// to applications, lookups and admin calls, and keeps its id from being reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_campaign_is_archived_and_answers_archived() {
    let db = coupon_testkit::ScratchDb::new();
    let mut config = config();
    config.database.database_url = db.url();
    let app = TestApp::start(config).await;
    app.create(json!({"id": "held", "quota": 3})).await;
    app.create(json!({"id": "gone", "quota": 3})).await;
    assert_eq!(
        status(&app.apply(Some("held"), 1).await),
        (StatusCode::OK, "success")
    );
    let before = app.snapshot().await;

    let anonymous = app
        .call(Method::POST, "/api/campaigns/gone/archive", &[], "")
        .await;
    assert_eq!(status(&anonymous), (StatusCode::UNAUTHORIZED, "error"));
    for (path, code, expected) in [
        (
            "/api/campaigns/Bad!/archive",
            StatusCode::BAD_REQUEST,
            "error",
        ),
        (
            "/api/campaigns/nope/archive",
            StatusCode::NOT_FOUND,
            "unknown_campaign",
        ),
        (
            "/api/campaigns/gone/archive",
            StatusCode::CONFLICT,
            "not_settled",
        ),
    ] {
        let answer = admin(&app, Method::POST, path).await;
        assert_eq!(status(&answer), (code, expected), "{path}: {}", answer.1);
    }
    let open = admin(&app, Method::POST, "/api/campaigns/gone/archive").await;
    assert_eq!(open.1["reason"], "not_closed", "{}", open.1);
    assert_eq!(app.snapshot().await, before, "refusals change nothing");

    admin(&app, Method::POST, "/api/campaigns/held/close").await;
    app.drained("held").await;
    let (code, differs) = admin(&app, Method::POST, "/api/campaigns/held/archive").await;
    assert_eq!(code, StatusCode::CONFLICT, "{differs}");
    assert_eq!(differs["reason"], "mysql_differs", "{differs}");
    assert_eq!(
        (differs["holders"].clone(), differs["rows"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        status(&app.call(Method::GET, "/api/campaigns/held", &[], "").await),
        (StatusCode::OK, "success"),
        "still live"
    );

    admin(&app, Method::POST, "/api/campaigns/gone/close").await;
    let (code, archived) = admin(&app, Method::POST, "/api/campaigns/gone/archive").await;
    assert_eq!(code, StatusCode::OK, "{archived}");
    assert_eq!(archived["status"], "archived");
    assert_eq!(archived["alreadyArchived"], false);
    assert_eq!(
        (archived["quota"].clone(), archived["issued"].clone()),
        (json!(3), json!(0))
    );
    let (code, again) = admin(&app, Method::POST, "/api/campaigns/gone/archive").await;
    assert_eq!(
        (code, again["alreadyArchived"].clone()),
        (StatusCode::OK, json!(true))
    );

    let gone = [
        app.apply(Some("gone"), 2).await,
        app.call(Method::GET, "/api/campaigns/gone", &[], "").await,
        app.call(Method::GET, "/api/campaigns/gone/users/2", &[], "")
            .await,
        admin(&app, Method::DELETE, "/api/campaigns/gone/users/2").await,
        admin(&app, Method::POST, "/api/campaigns/gone/close").await,
    ];
    for answer in &gone {
        assert_eq!(
            status(answer),
            (StatusCode::GONE, "archived"),
            "{}",
            answer.1
        );
    }
    assert!(gone[1].1["archivedAt"].is_string(), "{}", gone[1].1);
    assert_eq!(
        status(&app.create(json!({"id": "gone", "quota": 5})).await),
        (StatusCode::CONFLICT, "campaign_archived")
    );
    let (_, list) = admin(&app, Method::GET, "/api/campaigns").await;
    let entry = list["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "gone")
        .cloned()
        .unwrap();
    assert_eq!(entry["state"], "archived", "{entry}");
    assert!(entry["archivedAt"].is_string(), "{entry}");
}

/// With `COUPON_ARCHIVE_AFTER`, a campaign closed longer than that is archived by itself once
/// settled, and the census counts it in `coupon_campaigns{state="archived"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_archives_a_settled_campaign_by_itself() {
    let db = coupon_testkit::ScratchDb::new();
    let mut config = config();
    config.database.database_url = db.url();
    config.archive_after = Some(Duration::from_secs(2));
    let app = TestApp::start(config).await;
    app.create(json!({"id": "kept", "quota": 3})).await;
    app.create(json!({"id": "old", "quota": 3})).await;
    admin(&app, Method::POST, "/api/campaigns/old/close").await;
    support::eventually(
        Duration::from_secs(30),
        "the closed campaign to be archived",
        || async {
            let answer = app.call(Method::GET, "/api/campaigns/old", &[], "").await;
            status(&answer) == (StatusCode::GONE, "archived")
        },
    )
    .await;
    let answer = app.call(Method::GET, "/api/campaigns/kept", &[], "").await;
    assert_eq!(
        status(&answer),
        (StatusCode::OK, "success"),
        "an open campaign stays"
    );
    support::eventually(
        Duration::from_secs(30),
        "the census to count it",
        || async {
            let (_, text) = app.call(Method::GET, "/metrics", &[], "").await;
            let text = text.as_str().unwrap_or_default().to_owned();
            text.lines().any(|l| {
                l.starts_with("coupon_campaigns{")
                    && l.contains("state=\"archived\"")
                    && !l.ends_with(" 0")
            })
        },
    )
    .await;
}

/// MySQL away: an archive cannot check that the campaign is settled, so it is answered 503
/// `unavailable` with `Retry-After`, and the campaign stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_without_mysql_is_unavailable_and_changes_nothing() {
    let mut config = config();
    config.database.database_url = format!(
        "mysql://root@127.0.0.1:{}/coupon_none",
        support::free_port()
    );
    let app = TestApp::start(config).await;
    app.create(json!({"id": "kept", "quota": 3})).await;
    admin(&app, Method::POST, "/api/campaigns/kept/close").await;
    let before = app.snapshot().await;
    let answer = support::raw_call(
        app.addr,
        Method::POST,
        "/api/campaigns/kept/archive",
        &[("authorization", AUTH)],
        "",
    )
    .await;
    assert_eq!(
        (answer.status, answer.body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "{}",
        answer.body
    );
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(app.snapshot().await, before, "nothing changed");
}

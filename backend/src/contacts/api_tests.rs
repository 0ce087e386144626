//! `/v1/contacts` through the router, and the functions other modules call.

use axum::http::StatusCode;
use serde_json::json;

use crate::{accounts::Plan, contacts, error::ApiError, testing::TestApp};

async fn app_with_two_accounts() -> (TestApp, String, String) {
    let app = TestApp::new().await;
    let a = app
        .create_account("A", Plan::WizPro, "a@a.test", "password-a")
        .await;
    let b = app
        .create_account("B", Plan::WizBot, "b@b.test", "password-b")
        .await;
    (app, a, b)
}

#[tokio::test]
async fn crud_round_trip_with_events() {
    let (app, a, _) = app_with_two_accounts().await;
    let created = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(
                json!({"phone": "+14155550101", "name": "Ada", "tags": ["vip"],
                        "attributes": {"tier": "gold", "n": 1}, "opted_in": true}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("con_"));
    assert_eq!(created.body["chatbot"], json!(null));
    assert!(created.body["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created.body.get("account_id").is_none());

    let fetched = app.v1(&a, "GET", &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, created.body);

    let patched = app
        .v1(
            &a,
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(
                json!({"name": null, "attributes": {"n": null, "city": "Oslo"},
                        "tags": ["vip", "new"], "opted_in": false}),
            ),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["name"], json!(null));
    assert_eq!(
        patched.body["attributes"],
        json!({"tier": "gold", "city": "Oslo"})
    );
    assert_eq!(patched.body["tags"], json!(["vip", "new"]));
    assert_eq!(patched.body["opted_in"], json!(false));

    let types: Vec<(String,)> =
        sqlx::query_as("SELECT type FROM events WHERE account_id = $1 ORDER BY id")
            .bind(&a)
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    let mut types: Vec<&str> = types.iter().map(|(t,)| t.as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["contact.created", "contact.updated"]);

    let deleted = app
        .v1(&a, "DELETE", &format!("/v1/contacts/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app.v1(&a, "GET", &format!("/v1/contacts/{id}"), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "not_found");
}

#[tokio::test]
async fn validation_and_duplicates() {
    let (app, a, b) = app_with_two_accounts().await;
    let first = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550101"})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["opted_in"], json!(true));
    let dup = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550101"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.code(), "contact_exists");
    // Unique per account only.
    let other = app
        .v1(
            &b,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550101"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);

    let bad = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "4155550101"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "invalid_phone");
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("phone"));

    let unknown = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550102", "nickname": "x"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nickname"));

    for (body, code) in [
        (
            json!({"phone": "+14155550103", "name": "n".repeat(201)}),
            "invalid_name",
        ),
        (
            json!({"phone": "+14155550103", "tags": ["t".repeat(65)]}),
            "invalid_tags",
        ),
        (
            json!({"phone": "+14155550103", "attributes": {"a": {"b": 1}}}),
            "invalid_attributes",
        ),
    ] {
        let answer = app.v1(&a, "POST", "/v1/contacts", Some(body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.code(), code);
    }

    let second = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550104"})),
        )
        .await;
    let id = second.body["id"].as_str().unwrap();
    let taken = app
        .v1(
            &a,
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(json!({"phone": "+14155550101"})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.code(), "contact_exists");
}

#[tokio::test]
async fn pagination_and_filters() {
    let (app, a, _) = app_with_two_accounts().await;
    for i in 0..5 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        let answer = app
            .v1(
                &a,
                "POST",
                "/v1/contacts",
                Some(
                    json!({"phone": format!("+1415555010{i}"), "name": format!("Person {i}"),
                            "tags": tags}),
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/contacts?limit=2&cursor={c}"),
            None => "/v1/contacts?limit=2".to_string(),
        };
        let page = app.v1(&a, "GET", &path, None).await;
        assert_eq!(page.status, StatusCode::OK);
        let data = page.body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|c| c["phone"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    // Every contact exactly once. (Ids order by creation time to the millisecond; within
    // one millisecond their order is random, so compare as sorted lists.)
    seen.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("+1415555010{i}")).collect();
    assert_eq!(seen, expected);

    let even = app.v1(&a, "GET", "/v1/contacts?tag=even", None).await;
    assert_eq!(even.body["data"].as_array().unwrap().len(), 3);
    assert_eq!(even.body["next_cursor"], json!(null));
    let by_name = app.v1(&a, "GET", "/v1/contacts?q=person%203", None).await;
    assert_eq!(by_name.body["data"].as_array().unwrap().len(), 1);
    let by_phone = app.v1(&a, "GET", "/v1/contacts?q=5550104", None).await;
    assert_eq!(by_phone.body["data"][0]["phone"], json!("+14155550104"));
    let wildcard = app.v1(&a, "GET", "/v1/contacts?q=%25", None).await;
    assert_eq!(wildcard.body["data"].as_array().unwrap().len(), 0);
    let too_many = app.v1(&a, "GET", "/v1/contacts?limit=201", None).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tenants_are_isolated_and_proof_is_required() {
    let (app, a, b) = app_with_two_accounts().await;
    let created = app
        .v1(
            &a,
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550101"})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "x"}))),
        ("DELETE", None),
    ] {
        let answer = app
            .v1(&b, method, &format!("/v1/contacts/{id}"), body)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}");
    }
    let list = app.v1(&b, "GET", "/v1/contacts", None).await;
    assert_eq!(list.body["data"], json!([]));

    let anonymous = app
        .send(
            axum::http::Request::get("/v1/contacts")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.code(), "missing_gateway_proof");
}

#[tokio::test]
async fn rust_api_for_other_modules() {
    let (app, a, _) = app_with_two_accounts().await;
    let mut tx = crate::unit_of_work::UnitOfWork::begin(&app.state)
        .await
        .unwrap();
    let (contact, created) = contacts::find_or_create(&mut tx, &a, "+14155550199")
        .await
        .unwrap();
    assert!(created);
    let (again, created) = contacts::find_or_create(&mut tx, &a, "+14155550199")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, contact.id);
    let bad = contacts::find_or_create(&mut tx, &a, "bad")
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(bad).code(), "invalid_phone");
    let state = contacts::ChatbotState {
        flow_id: "flw_1".into(),
        step: "start".into(),
        paused: false,
    };
    contacts::set_chatbot(&mut tx, &a, &contact.id, Some(&state))
        .await
        .unwrap();
    let loaded = contacts::get(&mut tx, &a, &contact.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.chatbot, Some(state));
    let by_phone = contacts::find_by_phone(&mut tx, &a, "+14155550199")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_phone.id, contact.id);
    let updated = contacts::update(
        &mut tx,
        &a,
        &contact.id,
        contacts::ContactPatch {
            opted_in: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!updated.opted_in);
    let missing = contacts::update(&mut tx, &a, "con_nope", Default::default())
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(missing).status(), StatusCode::NOT_FOUND);
    contacts::set_chatbot(&mut tx, &a, &contact.id, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = app.state.db.acquire().await.unwrap();
    let loaded = contacts::get(&mut conn, &a, &contact.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.chatbot, None);
    assert_eq!(loaded.to_json()["chatbot"], json!(null));
}

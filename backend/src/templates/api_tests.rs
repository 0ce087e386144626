//! Templates through the router: seeded examples, admin CRUD, the public list.

use axum::http::StatusCode;
use serde_json::json;

use crate::messages::testkit::start;

#[tokio::test]
async fn admin_crud_and_public_list() {
    let m = start(1000).await;
    let console = m.app.demo_console().await;
    let seeded = m.app.admin(&console, "GET", "/admin/templates", None).await;
    assert_eq!(seeded.status, StatusCode::OK);
    let names: Vec<&str> = seeded.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"order_update"), "{names:?}");
    let order = seeded.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "order_update" && t["language"] == "en")
        .unwrap();
    assert_eq!(order["body"], "Hi {{name}}, order {{order}} has shipped");
    assert_eq!(order["variables"], json!(["name", "order"]));

    let created = m
        .app
        .admin(&console, "POST", "/admin/templates",
               Some(json!({"name": "payment_due", "language": "en", "body": "Hi {{name}}, {{amount}} is due"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tpl_"));
    let dup = m
        .app
        .admin(
            &console,
            "POST",
            "/admin/templates",
            Some(json!({"name": "payment_due", "language": "en", "body": "x"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.code(), "template_exists");
    for body in [
        json!({"name": "Bad Name", "language": "en", "body": "x"}),
        json!({"name": "ok", "language": "english", "body": "x"}),
        json!({"name": "ok", "language": "en", "body": "Hi {{name"}),
        json!({"name": "ok", "language": "en", "body": ""}),
    ] {
        let answer = m
            .app
            .admin(&console, "POST", "/admin/templates", Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.code(), "invalid_template");
    }
    let wrong_type = m
        .app
        .admin(
            &console,
            "POST",
            "/admin/templates",
            Some(json!({"name": 1, "language": "en", "body": "x"})),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);

    let patched = m
        .app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/templates/{id}"),
            Some(json!({"body": "Pay {{amount}}"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["variables"], json!(["amount"]));
    let clash = m
        .app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/templates/{id}"),
            Some(json!({"name": "order_update"})),
        )
        .await;
    assert_eq!(clash.code(), "template_exists");

    // The API key's account sees its own templates only.
    let public = m.v1("GET", "/v1/templates?limit=200", None).await;
    assert_eq!(public.status, StatusCode::OK);
    assert!(public.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["name"] != "payment_due"));
    let other = m.app.login("ops@shop.test", "password-shop").await;
    let hidden = m
        .app
        .admin(&other, "GET", &format!("/admin/templates/{id}"), None)
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    let deleted = m
        .app
        .admin(&console, "DELETE", &format!("/admin/templates/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = m
        .app
        .admin(&console, "DELETE", &format!("/admin/templates/{id}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Deleted examples do not come back.
    let example = &seeded.body["data"][0]["id"].as_str().unwrap().to_string();
    m.app
        .admin(
            &console,
            "DELETE",
            &format!("/admin/templates/{example}"),
            None,
        )
        .await;
    let after = m
        .app
        .admin(&console, "GET", "/admin/templates?limit=200", None)
        .await;
    assert!(after.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["id"] != example.as_str()));

    // The session is required.
    let anonymous = m
        .app
        .send(crate::testing::json_request(
            "POST",
            "/admin/templates",
            &json!({}),
        ))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

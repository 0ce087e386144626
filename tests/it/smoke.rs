//! The product starts from its binaries and answers on every listener.

use crate::harness::Stack;

#[tokio::test]
async fn both_programs_start_and_answer_health_checks() {
    let stack = Stack::start().await;
    for url in [
        format!("{}/healthz", stack.gateway_url()),
        format!("{}/healthz", stack.metrics_url()),
        format!("{}/healthz", stack.backend_url()),
    ] {
        let status = reqwest::get(&url).await.expect(&url).status();
        assert_eq!(status, 200, "{url}");
    }
    // The bare origin leads a person to the console.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", stack.gateway_url()))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
    assert_eq!(redirect.headers()["location"], "/console");
    assert!(stack
        .gateway_metrics()
        .await
        .contains("wiz_gateway_requests_total"));
    assert!(stack
        .backend_metrics()
        .await
        .contains("wiz_backend_http_requests_total"));
}

//! The gateway's configuration file is hot-reloaded on change and on SIGHUP; a bad file is
//! rejected, counted, and the running configuration stays.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{eventually, metric_value, Api, Auth, Stack};

/// Asks as a client behind a proxy that says the client is 203.0.113.7.
async fn via_proxy(api: &Api) -> u16 {
    Api::send(
        api.request(Method::GET, "/v1/contacts", Auth::Bearer)
            .header("x-forwarded-for", "203.0.113.7"),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn gateway_config_reloads_on_change_and_sighup_and_keeps_running_config_on_bad_files() {
    let mut stack = Stack::start().await;
    let file = stack.dir.path().join("config/gateway.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "trusted_proxies: []\n").unwrap();
    stack.restart_gateway().await;

    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"ip_whitelist": ["203.0.113.7"], "rate_limit_per_minute": 1000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    assert_eq!(
        via_proxy(&api).await,
        403,
        "loopback is not a trusted proxy yet"
    );

    // A changed file takes effect without a restart.
    std::fs::write(&file, "trusted_proxies: [\"127.0.0.1/32\"]\n").unwrap();
    eventually(
        "the edited file to apply",
        Duration::from_secs(10),
        || async { (via_proxy(&api).await == 200).then_some(()) },
    )
    .await;

    // A bad file is rejected and counted; the running configuration stays.
    std::fs::write(&file, "trusted_proxies: [\"127.0.0.1/99\"]\n").unwrap();
    eventually(
        "the bad file to be rejected",
        Duration::from_secs(10),
        || async {
            let m = stack.gateway_metrics().await;
            (metric_value(&m, "wiz_gateway_config_reload_errors_total") >= Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(via_proxy(&api).await, 200, "old configuration kept");
    assert!(stack.logs().contains("reload"), "the rejection is logged");

    // SIGHUP reloads too (here: the same good file again, counted as a reload).
    std::fs::write(&file, "trusted_proxies: [\"127.0.0.1/32\"]\n").unwrap();
    let reloads = || async {
        metric_value(
            &stack.gateway_metrics().await,
            "wiz_gateway_config_reloads_total",
        )
        .unwrap_or(0.0)
    };
    let before = eventually(
        "the fixed file to apply",
        Duration::from_secs(10),
        || async {
            let n = reloads().await;
            (n >= 2.0).then_some(n)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // let the file watcher settle
    let before = reloads().await.max(before);
    stack.signal_gateway("HUP");
    eventually("SIGHUP to reload", Duration::from_secs(10), || async {
        (reloads().await > before).then_some(())
    })
    .await;
    assert_eq!(via_proxy(&api).await, 200);
}

//! Every query in the shipped Grafana dashboards uses only metrics the programs export, and the
//! provisioning files point at the dashboards folder.

use std::{collections::BTreeSet, path::Path, time::Duration};

use serde_json::{json, Value};

use crate::harness::Stack;

/// Metric family names in Prometheus text, with histogram series suffixes folded back.
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `wiz_*` identifiers used in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("wiz_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            let name = &expr[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(family.to_string());
        }
        i = end;
    }
    names
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn dashboard_queries_use_only_exported_metrics() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;

    // Traffic that makes every labelled series appear: accepted and refused API calls, a
    // message through its lifecycle, a webhook attempt.
    let key = admin.create_key(json!({"rate_limit_per_minute": 2})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    api.post(
        "/v1/messages",
        json!({"to": "+14155550123", "type": "text", "text": {"body": "hi"}}),
    )
    .await
    .expect(202);
    api.get("/v1/contacts").await.expect(200);
    api.get("/v1/contacts")
        .await
        .expect_error(429, "rate_limited");
    let hook = admin
        .post(
            "/admin/webhooks",
            json!({"url": "http://127.0.0.1:9/", "events": ["*"]}),
        )
        .await;
    let hook_id = hook.expect(201)["id"].as_str().unwrap().to_string();
    admin
        .post(&format!("/admin/webhooks/{hook_id}/test"), json!({}))
        .await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut used = BTreeSet::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&root).expect("dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(dashboard["title"].as_str().is_some(), "{}", path.display());
            let mut found = Vec::new();
            exprs(&dashboard, &mut found);
            assert!(!found.is_empty(), "{} has no queries", path.display());
            for e in found {
                used.extend(metrics_in(&e));
            }
            count += 1;
        }
    }
    assert!(count >= 2, "gateway and backend dashboards");
    for e in alert_rules(&root) {
        used.extend(metrics_in(&e));
    }

    // Gauges refreshed by background loops may need a moment after the traffic.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exported: BTreeSet<String> = exported_families(&stack.gateway_metrics().await)
            .into_iter()
            .chain(exported_families(&stack.backend_metrics().await))
            .collect();
        let missing: Vec<_> = used.iter().filter(|m| !exported.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboards query metrics nobody exports: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let provider =
        std::fs::read_to_string(root.join("provisioning/dashboards/wizmessage.yaml")).unwrap();
    assert!(provider.contains("type: file") && provider.contains("path:"));
}

/// The expressions of the shipped alerting rules; each rule must carry a summary and a runbook
/// link to a section that exists in docs/runbook.md.
fn alert_rules(dashboards: &Path) -> Vec<String> {
    let path = dashboards.join("alerts/wizmessage.rules.yaml");
    let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let runbook = std::fs::read_to_string(dashboards.join("../docs/runbook.md")).unwrap();
    let mut found = Vec::new();
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let name = rule["alert"].as_str().expect("alerting rules only");
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{name}: summary"
        );
        let link = rule["annotations"]["runbook"].as_str().unwrap_or_default();
        let anchor = link
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook link {link:?}"));
        assert_eq!(anchor, name.to_ascii_lowercase(), "{name}: runbook anchor");
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "{name}: no runbook section in docs/runbook.md"
        );
        found.push(rule["expr"].as_str().unwrap().to_string());
    }
    assert!(found.len() >= 7, "the alerts issue 13 asks for");
    found
}

/// Grafana picks the window from the scrape interval (`$__rate_interval`), and every stat panel
/// says when its number is bad.
#[test]
fn dashboards_use_rate_interval_and_thresholds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    for name in ["gateway.json", "backend.json"] {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap();
        let mut found = Vec::new();
        exprs(&dashboard, &mut found);
        for e in &found {
            if e.contains('[') {
                assert!(
                    e.contains("[$__rate_interval]"),
                    "{name}: fixed window in {e}"
                );
            }
        }
        let var = &dashboard["templating"]["list"][0];
        assert_eq!(var["type"], "datasource", "{name}");
        for field in ["current", "options", "refresh", "hide", "regex"] {
            assert!(
                var.get(field).is_some(),
                "{name}: datasource variable lacks {field}"
            );
        }
        for panel in dashboard["panels"].as_array().unwrap() {
            if panel["type"] == "stat" {
                let steps = &panel["fieldConfig"]["defaults"]["thresholds"]["steps"];
                assert!(
                    steps.as_array().is_some_and(|s| s.len() >= 2),
                    "{name}: stat panel {} has no thresholds",
                    panel["title"]
                );
            }
        }
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metrics_in("histogram_quantile(0.99, sum by (le) (rate(wiz_gateway_request_duration_seconds_bucket[5m]))) + wiz_x"),
        vec!["wiz_gateway_request_duration_seconds", "wiz_x"]
    );
    assert!(metrics_in("rate(foo_wiz_bar[1m])").is_empty());
}

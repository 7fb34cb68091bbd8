//! A value rotated in the secrets file is used without a restart; a broken file keeps the last good values.

use std::time::Duration;

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;
use crate::support::SECRETS;

fn write_secrets(proxy: &Proxy, openai: &str) {
    let body: String = SECRETS
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {}\n",
                serde_json::json!(if *k == "openai_key" { openai } else { v })
            )
        })
        .collect();
    // Write-then-rename, as Kubernetes volume updates and careful operators do.
    let tmp = proxy.path("secrets.yaml.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(tmp, proxy.path("secrets.yaml")).unwrap();
}

async fn call(proxy: &Proxy, url: &str) -> u16 {
    curl(proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", url])
        .await
        .status
}

/// The `Authorization` the upstream received last.
fn last_authorization(echo: &Echo) -> String {
    echo.requests()
        .last()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_value_is_used_without_restart_and_broken_file_keeps_last_good() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let rotated = "sk-REALSECRET-rotated-0042";
    write_secrets(&proxy, rotated);
    proxy
        .wait_for_log("secrets file reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(call(&proxy, &url).await, 200);
    let seen = last_authorization(&echo);
    assert_eq!(seen, format!("Bearer {rotated}"));

    std::fs::write(proxy.path("secrets.yaml"), "openai_key: [unterminated\n").unwrap();
    proxy
        .wait_for_log("secrets file not reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(call(&proxy, &url).await, 200);
    let seen = last_authorization(&echo);
    assert_eq!(seen, format!("Bearer {rotated}"), "last good value stays in service");
}

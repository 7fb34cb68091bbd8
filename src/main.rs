//! The `keyward` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use keyward::{app, cli, policy, telemetry, tls, webhook};

use std::process::ExitCode;

use clap::Parser;

use cli::{CaCommand, Cli, Command, PolicyCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("keyward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match app::check(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} routes, {} credentials)",
                    config.display(),
                    c.routes.len(),
                    c.credentials.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Admin {
            config,
            admin_token_file,
            command,
        } => {
            let (method, path) = command.request();
            match keyward::admin_client::call(&config, admin_token_file.as_deref(), method, &path) {
                Ok((status, body)) => {
                    println!("{}", body.trim_end());
                    if (200..300).contains(&status) {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: the admin API answered {status}");
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ca {
            command: CaCommand::Init { out },
        } => {
            let (cert, key) = (out.join("ca.crt"), out.join("ca.key"));
            match tls::ca::Ca::create(&cert, &key) {
                Ok(()) => {
                    println!(
                        "wrote {} (give this to agents to trust) and {} (keep private)",
                        cert.display(),
                        key.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy {
            command:
                PolicyCommand::Eval {
                    config,
                    input,
                    entrypoint,
                },
        } => match app::eval_policy(&config, &input, entrypoint.as_deref()) {
            Ok(decision) => {
                let out =
                    serde_json::json!({ "allow": decision.allow, "reason": decision.reason, "error": decision.error });
                println!("{out}");
                if decision.allow {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => match policy::test::run(&dir) {
            Ok(outcomes) => {
                for o in &outcomes {
                    println!(
                        "{} {}{}",
                        if o.passed { "PASS" } else { "FAIL" },
                        o.name,
                        if o.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", o.detail)
                        }
                    );
                }
                let failed = outcomes.iter().filter(|o| !o.passed).count();
                println!(
                    "{}: {} passed, {} failed",
                    dir.display(),
                    outcomes.len() - failed,
                    failed
                );
                if failed == 0 && !outcomes.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            trust_bundle,
            admin_token_file,
        } => {
            telemetry::logging::init(cli.log_format);
            serve(|stopped| async move {
                let files = app::RunFiles {
                    trust_bundle: trust_bundle.as_deref(),
                    admin_token: admin_token_file.as_deref(),
                };
                app::run(&config, files, stopped).await.map_err(|e| e.to_string())
            })
        }
        Command::Webhook {
            listen,
            tls_cert,
            tls_key,
            settings,
        } => {
            telemetry::logging::init(cli.log_format);
            serve(|stopped| async move {
                let settings = webhook::load_settings(&settings).map_err(|e| e.to_string())?;
                webhook::run(listen, &tls_cert, &tls_key, settings, stopped)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    }
}

/// Runs a server future on a multi-threaded runtime until SIGTERM or Ctrl-C.
fn serve<F, Fut>(server: F) -> ExitCode
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received");
            let _ = stop.send(true);
        });
        match server(stopped).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "keyward cannot start");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

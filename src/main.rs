//! The `keyward` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use keyward::{app, cli, controller, fleet, policy, telemetry, tls, webhook};

use std::process::ExitCode;

use clap::Parser;

use cli::{CaCommand, Cli, Command, IptablesCommand, PolicyCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("keyward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Iptables { command } => iptables(command),
        Command::Schema => {
            out(&format!("{:#}", keyward::config::config_schema()));
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
            controller,
            controller_ca,
            controller_ca_pem,
            controller_token,
            controller_config,
        } => {
            telemetry::logging::init(cli.log_format);
            serve(|stopped| async move {
                let link = match (controller, controller_ca, controller_ca_pem) {
                    (Some(url), Some(ca), _) => Some(fleet::Link::with_ca_file(&url, &ca, controller_token)?),
                    (Some(url), None, Some(pem)) => Some(fleet::Link::new(
                        &url,
                        pem.as_bytes(),
                        "KEYWARD_CONTROLLER_CA_PEM",
                        controller_token,
                    )?),
                    (Some(_), None, None) => {
                        return Err("--controller needs --controller-ca or --controller-ca-pem".to_string())
                    }
                    _ => None,
                };
                let link = link.map(std::sync::Arc::new);
                // A configuration from the controller is on disk before it is loaded, as a file would be.
                let followed = match (&link, controller_config) {
                    (Some(link), Some(name)) => {
                        let (etag, files) = link
                            .config(&name, None)
                            .await?
                            .ok_or("the controller sent no configuration")?;
                        fleet::write_config(&config, &files)?;
                        Some((name, etag))
                    }
                    _ => None,
                };
                let files = app::RunFiles {
                    trust_bundle: trust_bundle.as_deref(),
                    admin_token: admin_token_file.as_deref(),
                    controller: link.as_ref(),
                    followed,
                };
                app::run(&config, files, stopped).await.map_err(|e| e.to_string())
            })
        }
        Command::Controller(args) => {
            telemetry::logging::init(cli.log_format);
            serve(|stopped| async move {
                controller::run(args.settings()?, stopped)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Command::Exec {
            config,
            proxy,
            ca,
            override_env,
            command,
        } => {
            // Keyward's own log stays quiet on the child's terminal unless asked for.
            if std::env::var_os("KEYWARD_LOG").is_none() {
                std::env::set_var("KEYWARD_LOG", "warn");
            }
            telemetry::logging::init(cli.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime");
            let options = keyward::exec::Options {
                config,
                proxy,
                ca,
                override_env,
                command,
            };
            match runtime.block_on(keyward::exec::run(options)) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    eprintln!("keyward exec: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor { config, json } => {
            if std::env::var_os("KEYWARD_LOG").is_none() {
                std::env::set_var("KEYWARD_LOG", "error");
            }
            telemetry::logging::init(cli.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime");
            let rows = runtime.block_on(keyward::doctor::run(&config));
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
            } else {
                print!("{}", keyward::doctor::table(&rows));
            }
            if rows.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Block { agent, controller } => fleet_call(&controller, "block", agent.as_deref()),
        Command::Unblock { agent, controller } => fleet_call(&controller, "unblock", agent.as_deref()),
        Command::Blocked { controller } => fleet_call(&controller, "blocked", None),
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

/// `keyward block|unblock|blocked`: one call to the controller's API.
fn fleet_call(api: &cli::ControllerApi, action: &str, agent: Option<&str>) -> ExitCode {
    let (method, path) = match (action, agent) {
        ("blocked", _) => (http::Method::GET, "/v1/blocked".to_string()),
        (action, Some(agent)) => (http::Method::POST, format!("/v1/agents/{agent}/{action}")),
        (action, None) => (http::Method::POST, format!("/v1/{action}")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let result = runtime.block_on(async {
        tls::install_default_provider();
        let link = fleet::Link::with_ca_file(&api.controller, &api.controller_ca, api.api_token_file.clone())?;
        link.call_api(method, &path).await
    });
    match result {
        Ok((status, body)) => {
            println!("{body}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the controller answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
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

fn iptables(command: IptablesCommand) -> ExitCode {
    use keyward::iptables;
    let result = match command {
        IptablesCommand::Install { options: opts, dry_run } => {
            if dry_run {
                iptables::plan(&opts).map(|rules| {
                    let lines: Vec<String> = rules
                        .iter()
                        .map(|r| format!("{} -w {}", opts.binary, r.join(" ")))
                        .collect();
                    out(&lines.join("\n"));
                })
            } else {
                iptables::install(&opts).map(|n| {
                    println!(
                        "keyward iptables: {n} rules installed; TCP from every uid but {} goes to port {}",
                        opts.proxy_uid, opts.proxy_port
                    )
                })
            }
        }
        IptablesCommand::Uninstall { iptables: binary } => iptables::uninstall(&binary)
            .map(|n| println!("keyward iptables: removed ({n} jumps from OUTPUT, and Keyward's chains)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints output meant for a pipe (`keyward schema | jq`): a reader that stops early (`head`) ends the
/// output quietly, where `println!` would panic.
fn out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

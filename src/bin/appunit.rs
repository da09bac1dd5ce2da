//! appunit: the command line for appunitd's Actions, over its socket.

use appunit::catalog::{self, Catalog, import};
use appunit::config::{self, Config};
use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Install and run self-hosted apps with appunitd")]
struct Cli {
    /// appunitd's API socket.
    #[arg(
        long,
        global = true,
        env = "APPUNIT_SOCKET",
        default_value = "/run/appunit/appunit.sock"
    )]
    socket: PathBuf,
    /// Print the API's answer as JSON (ResponseData), for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// Configuration, for the catalog folders (the default version of an app).
    #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install a catalog app and follow it until it runs.
    Install {
        /// The catalog app, e.g. wordpress.
        app: String,
        /// Its name on this host (2-32 of a-z, 0-9): the app id.
        #[arg(long)]
        name: String,
        /// The app version; the catalog's newest when omitted.
        #[arg(long)]
        version: Option<String>,
        /// Return once queued, without following the install.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove an app (its data too, unless --keep-data).
    Uninstall {
        app_id: String,
        #[arg(long)]
        keep_data: bool,
        /// Also remove its images, unless another app uses them.
        #[arg(long)]
        delete_image: bool,
    },
    /// Upgrade an app to another version and follow it: the outcome, or the rollback.
    Upgrade {
        app_id: String,
        /// The version to upgrade to; the catalog's newest when omitted.
        #[arg(long)]
        version: Option<String>,
        /// Return once the upgrade runs, without following it.
        #[arg(long)]
        no_wait: bool,
    },
    Start {
        app_id: String,
    },
    Stop {
        app_id: String,
    },
    Restart {
        app_id: String,
    },
    Status {
        app_id: String,
    },
    /// All apps, or the one named.
    List {
        name: Option<String>,
    },
    /// Peer catalogs: import them, and check catalog folders as the daemon loads them.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Shell completions, to stdout.
    Completions {
        shell: clap_complete::Shell,
    },
    /// The man page, to stdout.
    Manpage,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Turn a checkout of a peer catalog into appunit app folders under DIR.
    Import {
        /// The source's layout.
        #[arg(long, value_parser = ["websoft9", "casaos"])]
        format: String,
        /// The checkout (docker-library, or CasaOS-AppStore).
        src: PathBuf,
        /// Where the app folders go, e.g. /etc/appunit/catalog.d.
        #[arg(long)]
        into: PathBuf,
    },
    /// Validate catalog folders (or single app folders) exactly as appunitd loads them.
    Check {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

/// Exit codes by class of error.
const EXIT_FAILED: u8 = 1; // the daemon could not be reached, or answered nonsense
const EXIT_PARAMETER: u8 = 2; // Param.*: the request was wrong
const EXIT_NOT_FOUND: u8 = 3; // no such app
const EXIT_BUSY: u8 = 4; // App.Busy
const EXIT_RUNTIME: u8 = 5; // the host could not do it (runtime, resources) or the app failed

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(EXIT_FAILED, &format!("starting: {err}")),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let socket = cli.socket.clone();
    let call = |action: &'static str, params: Vec<(&'static str, String)>| {
        let socket = socket.clone();
        async move { call(&socket, action, &params).await }
    };
    let reply = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "appunit",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Catalog { command } => return catalog(command, cli.json),
        Command::Manpage => {
            let page = clap_mangen::Man::new(Cli::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(EXIT_FAILED, &err.to_string()),
            };
        }
        Command::Install {
            app,
            name,
            version,
            no_wait,
        } => {
            let version = match version.or_else(|| newest_version(&cli.config, &app)) {
                Some(version) => version,
                None => {
                    return fail(
                        EXIT_PARAMETER,
                        &format!(
                            "no version given, and no catalog app {app} here to take its newest"
                        ),
                    );
                }
            };
            let params = vec![
                ("app_name", app),
                ("customer_app_name", name.clone()),
                ("app_version", version),
            ];
            let reply = call("AppInstall", params).await;
            if no_wait || cli.json || reply.as_ref().is_ok_and(|r| r.get("Error").is_some()) {
                reply
            } else {
                return follow(&cli.socket, &name).await;
            }
        }
        Command::Uninstall {
            app_id,
            keep_data,
            delete_image,
        } => {
            let params = vec![
                ("app_id", app_id),
                ("delete_data", (!keep_data).to_string()),
                ("delete_image", delete_image.to_string()),
            ];
            call("AppUninstall", params).await
        }
        Command::Upgrade {
            app_id,
            version,
            no_wait,
        } => {
            let version = match version {
                Some(version) => Some(version),
                None => match call("AppStatus", vec![("app_id", app_id.clone())]).await {
                    Ok(envelope) if envelope.get("Error").is_some() => {
                        return report(&envelope, cli.json);
                    }
                    Ok(envelope) => {
                        newest_version(&cli.config, text(&envelope["ResponseData"]["name"]))
                    }
                    Err(err) => return fail(EXIT_FAILED, &err),
                },
            };
            let Some(version) = version else {
                return fail(
                    EXIT_PARAMETER,
                    &format!(
                        "no version given, and no catalog entry of {app_id} here to take its newest"
                    ),
                );
            };
            let params = vec![("app_id", app_id.clone()), ("app_version", version)];
            let reply = call("AppUpgrade", params).await;
            if no_wait || cli.json || reply.as_ref().is_ok_and(|r| r.get("Error").is_some()) {
                reply
            } else {
                return follow_upgrade(&cli.socket, &app_id).await;
            }
        }
        Command::Start { app_id } => call("AppStart", vec![("app_id", app_id)]).await,
        Command::Stop { app_id } => call("AppStop", vec![("app_id", app_id)]).await,
        Command::Restart { app_id } => call("AppRestart", vec![("app_id", app_id)]).await,
        Command::Status { app_id } => call("AppStatus", vec![("app_id", app_id)]).await,
        Command::List { name } => {
            call(
                "AppList",
                name.map(|n| vec![("customer_app_name", n)])
                    .unwrap_or_default(),
            )
            .await
        }
    };
    match reply {
        Ok(envelope) => report(&envelope, cli.json),
        Err(err) => fail(EXIT_FAILED, &err),
    }
}

/// `appunit catalog`: local work on folders, no daemon involved.
fn catalog(command: CatalogCommand, json: bool) -> ExitCode {
    match command {
        CatalogCommand::Check { dirs } => {
            if catalog::check(&dirs).print() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        CatalogCommand::Import { format, src, into } => {
            let format: import::Format = match format.parse() {
                Ok(format) => format,
                Err(err) => return fail(EXIT_PARAMETER, &err),
            };
            let outcomes = match import::import(format, &src, &into) {
                Ok(outcomes) => outcomes,
                Err(err) => return fail(EXIT_FAILED, &err),
            };
            if json {
                match serde_json::to_string_pretty(&outcomes) {
                    Ok(text) => println!("{text}"),
                    Err(err) => return fail(EXIT_FAILED, &err.to_string()),
                }
            } else {
                for outcome in &outcomes {
                    let app = outcome.app.as_deref().unwrap_or("-");
                    match &outcome.refusal {
                        None => println!("{:<24} imported as {app}", outcome.source),
                        Some(refusal) => println!(
                            "{:<24} refused: {} ({})",
                            outcome.source, refusal.reason, refusal.detail
                        ),
                    }
                }
            }
            // With --json, stdout is the JSON alone.
            if json {
                eprintln!("{}", import::summary(&outcomes));
            } else {
                println!("{}", import::summary(&outcomes));
            }
            ExitCode::SUCCESS
        }
    }
}

/// An Action's answer on the terminal: its error, or its data as JSON or for people.
fn report(envelope: &serde_json::Value, json: bool) -> ExitCode {
    if let Some(error) = envelope.get("Error") {
        return fail_with(error);
    }
    let data = &envelope["ResponseData"];
    if json {
        println!("{data}");
    } else if let Some(apps) = data.as_array() {
        print_table(apps);
    } else if data.get("status").is_some() {
        print_status(data);
    } else {
        println!("{}: done", data["app_id"].as_str().unwrap_or_default());
    }
    ExitCode::SUCCESS
}

/// The newest version of a catalog app, from the catalog folders of the config.
fn newest_version(config_path: &Path, app: &str) -> Option<String> {
    let explicit = config_path != Path::new(config::DEFAULT_PATH);
    let config = Config::load(config_path, explicit).ok()?;
    let (catalog, _) = Catalog::load(&config.catalog_dirs);
    catalog.get(app)?.meta.versions.first().cloned()
}

/// Follows an upgrade with the progress bar until its operation ends: the app as it is
/// then, or the rollback's reason (and a non-zero exit).
async fn follow_upgrade(socket: &Path, app_id: &str) -> ExitCode {
    let bar = progress_bar();
    loop {
        let envelope = match call(socket, "AppStatus", &[("app_id", app_id.to_string())]).await {
            Ok(envelope) => envelope,
            Err(err) => {
                bar.abandon();
                return fail(EXIT_FAILED, &err);
            }
        };
        if let Some(error) = envelope.get("Error") {
            bar.abandon();
            return fail_with(error);
        }
        let status = &envelope["ResponseData"];
        show_progress(&bar, status);
        if status["operation"].is_null() {
            let last = &status["last_operation"];
            if last["kind"] == "upgrade" && last["result"] == "succeeded" {
                bar.finish_with_message("upgraded");
                print_status(status);
                return ExitCode::SUCCESS;
            }
            bar.abandon_with_message("rolled back");
            let detail = text(&last["reason"]["Detail"]);
            return fail(
                EXIT_RUNTIME,
                &format!(
                    "{app_id} is back on {} ({}): {detail}",
                    text(&status["app_version"]),
                    text(&status["status"])
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:12} [{bar:30}] {bytes}/{total_bytes}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The phase, and the bytes pulled while pulling.
fn show_progress(bar: &indicatif::ProgressBar, status: &Value) {
    bar.set_message(status["status"].as_str().unwrap_or_default().to_string());
    if let Some(progress) = status["progress"].as_object() {
        bar.set_length(progress["total_bytes"].as_u64().unwrap_or(0));
        bar.set_position(progress["done_bytes"].as_u64().unwrap_or(0));
    }
}

/// Follows an install with a progress bar (bytes while pulling, then the phase) until
/// it runs, then shows where and how to log in.
async fn follow(socket: &Path, app_id: &str) -> ExitCode {
    let bar = progress_bar();
    loop {
        let envelope = match call(socket, "AppStatus", &[("app_id", app_id.to_string())]).await {
            Ok(envelope) => envelope,
            Err(err) => {
                bar.abandon();
                return fail(EXIT_FAILED, &err);
            }
        };
        if let Some(error) = envelope.get("Error") {
            bar.abandon();
            return fail_with(error);
        }
        let status = &envelope["ResponseData"];
        show_progress(&bar, status);
        match status["status"].as_str().unwrap_or_default() {
            "running" => {
                bar.finish_with_message("running");
                print_status(status);
                return ExitCode::SUCCESS;
            }
            "error" => {
                bar.abandon_with_message("error");
                let reason = &status["status_reason"];
                let detail = reason["Detail"].as_str().unwrap_or_default();
                return fail(
                    EXIT_RUNTIME,
                    &format!("{app_id} failed to install: {detail}"),
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn print_table(apps: &[Value]) {
    println!(
        "{:<14} {:<14} {:<10} {:<10} {:<6} URL",
        "APP_ID", "APP", "VERSION", "STATUS", "PORT"
    );
    for app in apps {
        let info = &app["running_info"];
        println!(
            "{:<14} {:<14} {:<10} {:<10} {:<6} {}",
            text(&app["app_id"]),
            text(&app["name"]),
            text(&app["app_version"]),
            text(&app["status"]),
            info["port"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            text(&info["url"]),
        );
    }
}

fn print_status(app: &Value) {
    println!(
        "{} ({} {}): {}",
        text(&app["app_id"]),
        text(&app["trade_mark"]),
        text(&app["app_version"]),
        text(&app["status"])
    );
    if let Some(reason) = app["status_reason"].as_object() {
        println!(
            "  reason:   {}",
            reason
                .get("Detail")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
    }
    let info = &app["running_info"];
    if info.is_object() {
        println!("  url:      {}", text(&info["url"]));
        println!("  admin:    {}", text(&info["admin_url"]));
        println!("  user:     {}", text(&info["user_name"]));
        println!("  password: {}", text(&info["password"]));
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("appunit: {message}");
    ExitCode::from(code)
}

/// A SPEC error: its code, message and detail, and the exit code of its class.
fn fail_with(error: &Value) -> ExitCode {
    let code = text(&error["Code"]);
    let exit = match code {
        "Param.APPID.NotExist" => EXIT_NOT_FOUND,
        "App.Busy" => EXIT_BUSY,
        c if c.starts_with("Param.") || c == "Action.NotExist" => EXIT_PARAMETER,
        _ => EXIT_RUNTIME,
    };
    let detail = text(&error["Detail"]);
    let message = format!("{code}: {} {detail}", text(&error["Message"]));
    fail(exit, message.trim())
}

/// One Action over the socket: a POST with a form body. The whole envelope comes back.
async fn call(socket: &Path, action: &str, params: &[(&str, String)]) -> Result<Value, String> {
    let unreachable = |e: &dyn std::fmt::Display| format!("appunitd at {}: {e}", socket.display());
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let request = hyper::Request::post(format!("/{action}"))
        .header("host", "appunit")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("language", std::env::var("LANG").unwrap_or_default())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("appunitd answered something else than JSON: {e}"))
}

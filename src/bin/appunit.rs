//! appunit: the command line for appunitd's Actions, over its socket.

use appunit::catalog::{self, Catalog, import};
use appunit::client::{self, Events, Opened, call};
use appunit::config::{self, Config};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

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
    /// Back an app up to one bundle in the daemon's backup folder, and follow it until
    /// it is written; prints the bundle's name. The app is stopped while its data is read.
    Backup {
        app_id: String,
        /// Put its images in the bundle too, so that a restore needs no registry.
        #[arg(long)]
        with_images: bool,
        /// Return once under way, without following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// The backups, newest first: all, or one app's.
    Backups {
        app_id: Option<String>,
    },
    /// Install an app from a backup, and follow it until it runs.
    Restore {
        /// The bundle's name, as `appunit backups` shows it.
        backup: String,
        /// Its name on this host; the backed-up app's id when omitted.
        #[arg(long)]
        name: Option<String>,
        /// Return once queued, without following the restore.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a backup.
    BackupDelete {
        backup: String,
    },
    /// An app's log, oldest first: `service: message` lines.
    Logs {
        app_id: String,
        /// Keep printing new lines as they come, until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only this service's (container's) lines.
        #[arg(long)]
        service: Option<String>,
        /// How many of the last lines (the daemon's default is 100).
        #[arg(long)]
        lines: Option<u32>,
    },
    /// Every change of any app as it happens, one line each, until interrupted.
    Events,
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
            if no_wait || cli.json {
                call("AppInstall", params).await
            } else {
                return act_and_follow(&cli.socket, "AppInstall", &params, Until::Running).await;
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
            let params = vec![("app_id", app_id), ("app_version", version)];
            if no_wait || cli.json {
                call("AppUpgrade", params).await
            } else {
                return act_and_follow(&cli.socket, "AppUpgrade", &params, Until::OperationEnds)
                    .await;
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
        Command::Backup {
            app_id,
            with_images,
            no_wait,
        } => {
            let params = vec![
                ("app_id", app_id),
                ("include_images", with_images.to_string()),
            ];
            if no_wait || cli.json {
                call("AppBackup", params).await
            } else {
                return act_and_follow(&cli.socket, "AppBackup", &params, Until::OperationEnds)
                    .await;
            }
        }
        Command::Backups { app_id } => {
            let params = app_id.map(|id| vec![("app_id", id)]).unwrap_or_default();
            return match call("AppBackupList", params).await {
                Err(err) => fail(EXIT_FAILED, &err),
                Ok(envelope) if cli.json || envelope.get("Error").is_some() => {
                    report(&envelope, cli.json)
                }
                Ok(envelope) => {
                    print_backups(envelope["ResponseData"].as_array().unwrap_or(&Vec::new()));
                    ExitCode::SUCCESS
                }
            };
        }
        Command::Restore {
            backup,
            name,
            no_wait,
        } => {
            let mut params = vec![("backup", backup)];
            params.extend(name.map(|name| ("customer_app_name", name)));
            if no_wait || cli.json {
                call("AppRestore", params).await
            } else {
                return act_and_follow(&cli.socket, "AppRestore", &params, Until::Running).await;
            }
        }
        Command::BackupDelete { backup } => call("AppBackupDelete", vec![("backup", backup)]).await,
        Command::Logs {
            app_id,
            follow,
            service,
            lines,
        } => {
            let mut params = vec![("app_id", app_id)];
            params.extend(service.map(|s| ("service", s)));
            params.extend(lines.map(|n| ("lines", n.to_string())));
            if follow {
                params.push(("follow", "true".into()));
                return follow_logs(&cli.socket, &params, cli.json).await;
            }
            match call("AppLogs", params).await {
                Ok(envelope) if envelope.get("Error").is_none() && !cli.json => {
                    for entry in envelope["ResponseData"].as_array().into_iter().flatten() {
                        print_log(entry);
                    }
                    return ExitCode::SUCCESS;
                }
                reply => reply,
            }
        }
        Command::Events => return print_events(&cli.socket, cli.json).await,
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
    } else if let Some(backup) = data["backup"].as_str() {
        println!("{backup}");
    } else {
        println!("{}: done", data["app_id"].as_str().unwrap_or_default());
    }
    ExitCode::SUCCESS
}

/// The newest version of a catalog app, from the catalog folders of the config.
fn newest_version(config_path: &Path, app: &str) -> Option<String> {
    let config = Config::load(config_path).ok()?;
    let (catalog, _) = Catalog::load(&config.catalog_dirs);
    catalog.get(app)?.meta.versions.first().cloned()
}

/// What a follower waits for.
#[derive(Clone, Copy)]
enum Until {
    /// An install or a restore: the app runs, or its install failed.
    Running,
    /// An operation on an installed app (a backup, an upgrade): it is no longer under way.
    OperationEnds,
}

/// Runs an Action on an app and follows the app until `until`, with a progress bar.
/// The event stream is opened first, so no change after the Action is missed.
async fn act_and_follow(
    socket: &Path,
    action: &str,
    params: &[(&'static str, String)],
    until: Until,
) -> ExitCode {
    let mut events = match subscribe(socket).await {
        Ok(events) => events,
        Err(exit) => return exit,
    };
    let envelope = match call(socket, action, params).await {
        Ok(envelope) => envelope,
        Err(err) => return fail(EXIT_FAILED, &err),
    };
    if let Some(error) = envelope.get("Error") {
        return fail_with(error);
    }
    let started = &envelope["ResponseData"];
    let app_id = text(&started["app_id"]).to_string();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let status = match watch(socket, &mut events, &app_id, until, &bar).await {
        Ok(status) => status,
        Err(exit) => {
            bar.abandon();
            return exit;
        }
    };
    bar.finish_and_clear();
    match until {
        Until::Running if status["status"] == "running" => {
            print_status(&status);
            ExitCode::SUCCESS
        }
        Until::Running => {
            let detail = text(&status["status_reason"]["Detail"]);
            fail(
                EXIT_RUNTIME,
                &format!("{app_id} failed to install: {detail}"),
            )
        }
        Until::OperationEnds => {
            let last = &status["last_operation"];
            let (kind, result) = (text(&last["kind"]), text(&last["result"]));
            if result != "succeeded" {
                let detail = text(&last["reason"]["Detail"]);
                let outcome = match result {
                    "rolled_back" => format!(
                        "{app_id} is back on {} ({})",
                        text(&status["app_version"]),
                        text(&status["status"])
                    ),
                    _ => format!("{app_id}: {kind} {result}"),
                };
                return fail(EXIT_RUNTIME, &format!("{outcome}: {detail}"));
            }
            if let Some(downtime) = last["downtime_ms"].as_u64() {
                eprintln!("{app_id}: {kind} succeeded, down for {downtime} ms");
            }
            match started["backup"].as_str() {
                Some(backup) => println!("{backup}"),
                None => print_status(&status),
            }
            ExitCode::SUCCESS
        }
    }
}

/// `GET /Events`, open.
async fn subscribe(socket: &Path) -> Result<Events, ExitCode> {
    match client::open(socket, "Events", &[]).await {
        Ok(Opened::Stream(events)) => Ok(events),
        Ok(Opened::Reply(envelope)) => Err(match envelope.get("Error") {
            Some(error) => fail_with(error),
            None => fail(EXIT_FAILED, "appunitd answered /Events without a stream"),
        }),
        Err(err) => Err(fail(EXIT_FAILED, &err)),
    }
}

/// The app's status now, then at each of its events, until `until` holds: that status.
/// A stream the daemon closed (it restarted) is opened again and the status read afresh.
async fn watch(
    socket: &Path,
    events: &mut Events,
    app_id: &str,
    until: Until,
    bar: &indicatif::ProgressBar,
) -> Result<Value, ExitCode> {
    let mut status = app_status(socket, app_id).await?;
    loop {
        show(bar, &status);
        let done = match until {
            Until::Running => matches!(text(&status["status"]), "running" | "error"),
            Until::OperationEnds => status["operation"].is_null(),
        };
        if done {
            return Ok(status);
        }
        status = loop {
            match events.next().await {
                Ok(Some(event)) if event.name == "app" => {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
                    if data["app_id"] == app_id {
                        break data;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    *events = subscribe(socket).await?;
                    break app_status(socket, app_id).await?;
                }
                Err(err) => return Err(fail(EXIT_FAILED, &err)),
            }
        };
    }
}

async fn app_status(socket: &Path, app_id: &str) -> Result<Value, ExitCode> {
    match call(socket, "AppStatus", &[("app_id", app_id.to_string())]).await {
        Ok(envelope) => match envelope.get("Error") {
            Some(error) => Err(fail_with(error)),
            None => Ok(envelope["ResponseData"].clone()),
        },
        Err(err) => Err(fail(EXIT_FAILED, &err)),
    }
}

/// The phase (and the operation under way) on the bar; bytes while pulling.
fn show(bar: &indicatif::ProgressBar, status: &Value) {
    let phase = text(&status["status"]);
    bar.set_message(match status["operation"]["kind"].as_str() {
        Some(kind) => format!("{kind}: {phase}"),
        None => phase.to_string(),
    });
    if let Some(progress) = status["progress"].as_object() {
        if bar.length().is_none() {
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg:12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        bar.set_length(progress["total_bytes"].as_u64().unwrap_or(0));
        bar.set_position(progress["done_bytes"].as_u64().unwrap_or(0));
    }
}

/// `appunit events`: one line per event (or its data as JSON), until interrupted.
async fn print_events(socket: &Path, json: bool) -> ExitCode {
    let mut events = match subscribe(socket).await {
        Ok(events) => events,
        Err(exit) => return exit,
    };
    loop {
        match events.next().await {
            Ok(Some(event)) if json => println!("{}", event.data),
            Ok(Some(event)) => {
                let app: Value = serde_json::from_str(&event.data).unwrap_or_default();
                let progress = &app["progress"];
                let progress = match progress["percent"].as_u64() {
                    Some(percent) => format!(
                        " {percent}% {}/{}",
                        indicatif::HumanBytes(progress["done_bytes"].as_u64().unwrap_or(0)),
                        indicatif::HumanBytes(progress["total_bytes"].as_u64().unwrap_or(0))
                    ),
                    None => String::new(),
                };
                println!(
                    "{} {} {} {}{progress}",
                    humantime::format_rfc3339_millis(SystemTime::now()),
                    text(&app["app_id"]),
                    text(&app["status_code"]),
                    text(&app["status"]),
                );
            }
            Ok(None) => return fail(EXIT_FAILED, "appunitd closed the event stream"),
            Err(err) => return fail(EXIT_FAILED, &err),
        }
    }
}

/// `appunit logs -f`: the last lines, then each new one, until interrupted.
async fn follow_logs(socket: &Path, params: &[(&str, String)], json: bool) -> ExitCode {
    let mut entries = match client::open(socket, "AppLogs", params).await {
        Ok(Opened::Stream(entries)) => entries,
        Ok(Opened::Reply(envelope)) => return report(&envelope, json),
        Err(err) => return fail(EXIT_FAILED, &err),
    };
    loop {
        match entries.next().await {
            Ok(Some(event)) if json => println!("{}", event.data),
            Ok(Some(event)) => print_log(&serde_json::from_str(&event.data).unwrap_or_default()),
            Ok(None) => return fail(EXIT_FAILED, "appunitd closed the log stream"),
            Err(err) => return fail(EXIT_FAILED, &err),
        }
    }
}

fn print_log(entry: &Value) {
    println!("{}: {}", text(&entry["service"]), text(&entry["message"]));
}

fn print_backups(backups: &[Value]) {
    println!(
        "{:<40} {:<14} {:<10} {:<8} {:<24} {:>10} IMAGES",
        "BACKUP", "APP_ID", "APP", "VERSION", "CREATED", "SIZE"
    );
    for backup in backups {
        println!(
            "{:<40} {:<14} {:<10} {:<8} {:<24} {:>10} {}",
            text(&backup["backup"]),
            text(&backup["app_id"]),
            text(&backup["app_name"]),
            text(&backup["app_version"]),
            text(&backup["created"]),
            indicatif::HumanBytes(backup["size_bytes"].as_u64().unwrap_or(0)).to_string(),
            if backup["include_images"] == true {
                "yes"
            } else {
                "no"
            },
        );
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

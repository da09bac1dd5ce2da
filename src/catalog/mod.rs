//! App definitions: `<dir>/<name>/app.toml` + `compose.yaml` + a logo, from every
//! catalog folder in order (a later folder overrides an app of the same name).

pub mod compose;
pub mod import;
pub mod interpolate;

use compose::{Compose, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// app.toml, as SPEC's catalog format has it (the importer writes it too).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppMeta {
    pub name: String,
    pub trademark: String,
    pub versions: Vec<String>,
    pub official: bool,
    pub logo: String,
    pub web_service: String,
    pub web_port: u16,
    pub http_port: u16,
    pub admin_path: String,
    pub user_name: String,
    pub requirements: Requirements,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    pub cpu: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

#[derive(Debug)]
pub struct CatalogApp {
    pub meta: AppMeta,
    /// As read at load, with sample values for appunit's variables.
    pub compose: Compose,
    /// The compose file as written, for rendering at install time.
    pub compose_text: String,
    pub logo: Logo,
    /// The app's catalog folder: its `env_file`s and relative binds are there.
    pub folder: PathBuf,
    /// The folder's `.env`: defaults for the compose file's variables.
    pub dotenv: BTreeMap<String, String>,
    /// Whether the app needs host access (SPEC): only where `allow_host_access` is set.
    pub host_access: bool,
}

#[derive(Debug)]
pub struct Logo {
    pub extension: String,
    pub content_type: &'static str,
    pub bytes: bytes::Bytes,
}

impl CatalogApp {
    /// The compose file with appunit's `variables` (then the `.env` defaults) filled in,
    /// for an app whose data folder is `app_data`; and the filled-in text.
    pub fn render(
        &self,
        variables: &dyn Fn(&str) -> Option<String>,
        app_data: &Path,
    ) -> Result<(Compose, String), String> {
        let lookup = |name: &str| variables(name).or_else(|| self.dotenv.get(name).cloned());
        let context = Context {
            folder: &self.folder,
            variables: &lookup,
            app_data,
        };
        Compose::read(&self.compose_text, &context)
    }

    /// Whether the web service runs on the host's network: it listens on `web_port` on
    /// the host itself, which is then the app's port (`http_port` = `web_port`).
    pub fn web_on_host_network(&self) -> bool {
        self.compose
            .services
            .get(&self.meta.web_service)
            .is_some_and(|s| s.network_mode == compose::NetworkMode::Host)
    }

    /// What needs host access, as `service: key` lines.
    pub fn host_access_keys(&self) -> Vec<String> {
        self.compose.host_access()
    }

    /// Where the daemon serves this app's logo.
    pub fn image_url(&self) -> String {
        format!("/catalog/{}/logo.{}", self.meta.name, self.logo.extension)
    }
}

/// An app folder that could not be loaded; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CatalogError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Catalog {
    apps: BTreeMap<String, CatalogApp>,
}

impl Catalog {
    /// Loads every app of `dirs`. Invalid apps are returned as errors beside the catalog
    /// of valid ones, so one broken folder does not take the whole store down. Missing
    /// folders are skipped: `/etc/appunit/catalog.d` is optional.
    pub fn load(dirs: &[PathBuf]) -> (Catalog, Vec<CatalogError>) {
        let mut catalog = Catalog::default();
        let mut errors = Vec::new();
        for dir in dirs {
            let Ok(folders) = app_folders(dir) else {
                continue;
            };
            for folder in folders {
                match load_app(&folder) {
                    Ok(app) => {
                        catalog.apps.insert(app.meta.name.clone(), app);
                    }
                    Err(err) => errors.push(err),
                }
            }
        }
        (catalog, errors)
    }

    pub fn get(&self, name: &str) -> Option<&CatalogApp> {
        self.apps.get(name)
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

/// What `appunit catalog check` and `appunitd check-catalog` report: each DIR is a
/// catalog folder or one app folder (one with an app.toml), loaded exactly as the daemon
/// loads it. A missing folder, or one with no app in it, is a problem too: never a pass.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub valid: Vec<PathBuf>,
    pub errors: Vec<CatalogError>,
}

impl CheckReport {
    /// Prints each problem, then `N apps valid, M invalid`; true when every app is
    /// valid and there is at least one (an empty folder is no pass).
    pub fn print(&self) -> bool {
        for error in &self.errors {
            eprintln!("{error}");
        }
        println!(
            "{} apps valid, {} invalid",
            self.valid.len(),
            self.errors.len()
        );
        self.errors.is_empty() && !self.valid.is_empty()
    }
}

/// The folders in a catalog folder, sorted; hidden ones (work files) are not apps.
fn app_folders(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    folders.sort();
    Ok(folders)
}

pub fn check(dirs: &[PathBuf]) -> CheckReport {
    let mut report = CheckReport::default();
    for dir in dirs {
        let folders: Vec<PathBuf> = if dir.join("app.toml").is_file() {
            vec![dir.clone()]
        } else {
            match app_folders(dir) {
                Ok(folders) => folders,
                Err(e) => {
                    report.errors.push(CatalogError {
                        file: dir.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            }
        };
        if folders.is_empty() {
            report.errors.push(CatalogError {
                file: dir.clone(),
                message: "no app folder in it (an app folder has an app.toml)".into(),
            });
        }
        for folder in folders {
            match load_app(&folder) {
                Ok(_) => report.valid.push(folder),
                Err(err) => report.errors.push(err),
            }
        }
    }
    report
}

/// Dot folders are not apps (an importer's staging folder, editors' folders).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Loads one app folder as the daemon does, for the importer's own check.
pub fn check_app(folder: &Path) -> Result<(), CatalogError> {
    load_app(folder).map(|_| ())
}

fn load_app(folder: &Path) -> Result<CatalogApp, CatalogError> {
    let fail = |file: PathBuf| move |message: String| CatalogError { file, message };
    let meta_path = folder.join("app.toml");
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| fail(meta_path.clone())(e.to_string()))?;
    let meta = parse_meta(&text, folder).map_err(fail(meta_path.clone()))?;

    let logo_path = folder.join(&meta.logo);
    let logo = load_logo(&logo_path).map_err(fail(meta_path))?;

    let compose_path = folder.join("compose.yaml");
    let text = std::fs::read_to_string(&compose_path)
        .map_err(|e| fail(compose_path.clone())(e.to_string()))?;
    let dotenv_path = folder.join(".env");
    let dotenv = match std::fs::read_to_string(&dotenv_path) {
        Ok(text) => compose::parse_env_file(&text)
            .map_err(fail(dotenv_path))?
            .into_iter()
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(fail(dotenv_path)(e.to_string())),
    };
    let mut app = CatalogApp {
        meta,
        compose: Compose::default(),
        compose_text: text,
        logo,
        folder: folder.to_path_buf(),
        dotenv,
        host_access: false,
    };
    // Checked with stand-ins for what an install fills in.
    let app_data = Path::new("/var/lib/appunit/apps")
        .join(&app.meta.name)
        .join("data");
    let samples = |name: &str| {
        Some(match name {
            "APP_NAME" => app.meta.name.clone(),
            "APP_VERSION" => app.meta.versions[0].clone(),
            "APP_HTTP_PORT" => app.meta.http_port.to_string(),
            "APP_USER" => app.meta.user_name.clone(),
            "APP_PASSWORD" => "sample-password-0123".into(),
            "APP_DATA" => app_data.display().to_string(),
            _ => return None,
        })
    };
    let (compose, _) = app
        .render(&samples, &app_data)
        .map_err(fail(compose_path.clone()))?;
    compose
        .validate(&app.meta.web_service, app.meta.web_port, app.meta.http_port)
        .map_err(fail(compose_path))?;
    app.host_access = !compose.host_access().is_empty();
    app.compose = compose;
    Ok(app)
}

fn parse_meta(text: &str, folder: &Path) -> Result<AppMeta, String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    let meta: AppMeta = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        format!("key `{key}`: {}", e.into_inner().message())
    })?;
    let folder_name = folder.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if meta.name != folder_name {
        return Err(format!(
            "key `name`: {:?} differs from its folder name {folder_name:?}",
            meta.name
        ));
    }
    if meta.name.is_empty()
        || !meta
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!("key `name`: {:?} must match [a-z0-9]+", meta.name));
    }
    if meta.versions.is_empty() || meta.versions.iter().any(String::is_empty) {
        return Err("key `versions`: at least one non-empty version is needed".into());
    }
    if meta.http_port == 0 || meta.web_port == 0 {
        return Err("key `http_port`/`web_port`: a port must be 1-65535".into());
    }
    if !(meta.admin_path.is_empty() || meta.admin_path.starts_with('/')) {
        return Err(format!(
            "key `admin_path`: {:?} must start with /",
            meta.admin_path
        ));
    }
    if meta.logo.contains('/') {
        return Err(format!(
            "key `logo`: {:?} must be a file in the app folder",
            meta.logo
        ));
    }
    Ok(meta)
}

fn load_logo(path: &Path) -> Result<Logo, String> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let content_type = match extension.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        other => return Err(format!("key `logo`: unsupported image type {other:?}")),
    };
    let bytes: bytes::Bytes = std::fs::read(path)
        .map_err(|e| format!("key `logo`: {}: {e}", path.display()))?
        .into();
    Ok(Logo {
        extension,
        content_type,
        bytes,
    })
}

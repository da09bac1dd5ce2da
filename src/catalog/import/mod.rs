//! `appunit catalog import`: a checkout of a peer catalog (Websoft9's docker-library,
//! CasaOS's app store) made into appunit app folders (SPEC "Catalog import"). Each source
//! app ends as exactly one outcome: imported, and loaded by the daemon's own loader, or
//! refused with one reason.

mod casaos;
mod logo;
mod normalize;
mod vars;
mod websoft9;

use super::AppMeta;
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Websoft9,
    Casaos,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "websoft9" => Ok(Format::Websoft9),
            "casaos" => Ok(Format::Casaos),
            other => Err(format!("{other:?} is neither websoft9 nor casaos")),
        }
    }
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Websoft9 => "websoft9",
            Format::Casaos => "casaos",
        }
    }

    /// The folder of app folders inside a checkout.
    fn apps_dir(self, src: &Path) -> PathBuf {
        let inner = src.join(match self {
            Format::Websoft9 => "apps",
            Format::Casaos => "Apps",
        });
        if inner.is_dir() {
            inner
        } else {
            src.to_path_buf()
        }
    }
}

/// Why an app was not imported: `reason` is the one short word (or `unsupported-key K`).
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub reason: String,
    pub detail: String,
    /// For an app today's loader refuses: every key it does not accept yet, in the
    /// order met. All of them are in SPEC's Compose table (the importer checked that).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    /// Whether the app is refused only for keys of SPEC's table that the loader does
    /// not accept yet: such an app imports once the loader implements the table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spec_accepts: bool,
}

impl Refusal {
    pub fn new(reason: &str, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.to_string(),
            detail: detail.into(),
            blocked_by: Vec::new(),
            spec_accepts: false,
        }
    }

    pub fn unsupported(key: &str, place: String) -> Refusal {
        Refusal::new(
            &format!("unsupported-key {key}"),
            format!("{place}: `{key}` is not in SPEC's Compose table"),
        )
    }
}

/// One source app's outcome.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The source's folder name.
    pub source: String,
    /// The appunit app name (its folder under DIR) when it has one.
    pub app: Option<String>,
    pub outcome: &'static str,
    #[serde(flatten)]
    pub refusal: Option<Refusal>,
    /// What the importer changed or left out, for people to read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn imported(&self) -> bool {
        self.refusal.is_none()
    }
}

/// An app ready to be written: everything but the files is in memory.
pub struct Draft {
    pub meta: AppMeta,
    pub compose: Mapping,
    /// Files and folders of the source copied into the app folder: (source, relative).
    pub files: Vec<(PathBuf, PathBuf)>,
    /// Relative bind sources that do not exist: Docker makes them empty folders.
    pub empty_dirs: Vec<PathBuf>,
    /// The source's logo, when the checkout has it.
    pub logo: Option<PathBuf>,
    pub notes: Vec<String>,
}

/// The record of what an import wrote into DIR, so a later import replaces exactly that.
fn manifest_path(into: &Path, format: Format) -> PathBuf {
    into.join(format!(".appunit-import-{}.json", format.name()))
}

fn read_manifest(path: &Path) -> BTreeSet<String> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        .map(|names| names.into_iter().collect())
        .unwrap_or_default()
}

/// Imports every app of the checkout `src` into `into`. Only an error that stops the
/// whole import (unreadable source, unwritable DIR) is an Err.
pub fn import(format: Format, src: &Path, into: &Path) -> Result<Vec<Outcome>, String> {
    let apps_dir = format.apps_dir(src);
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&apps_dir)
        .map_err(|e| format!("{}: {e}", apps_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    folders.sort();
    std::fs::create_dir_all(into).map_err(|e| format!("{}: {e}", into.display()))?;
    let staging = into.join(".appunit-import-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;

    let manifest = manifest_path(into, format);
    let earlier = read_manifest(&manifest);
    let mut written = BTreeSet::new();
    let mut outcomes = Vec::new();
    for folder in folders {
        let source = folder
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let drafted = match format {
            Format::Websoft9 => websoft9::draft(&folder),
            Format::Casaos => casaos::draft(&folder),
        };
        let outcome = match drafted {
            Err(refusal) => Outcome {
                source,
                app: None,
                outcome: "refused",
                refusal: Some(refusal),
                notes: Vec::new(),
            },
            Ok(draft) => {
                let name = draft.meta.name.clone();
                let taken = written.contains(&name)
                    || (into.join(&name).exists() && !earlier.contains(&name));
                let result = if taken {
                    Err(Refusal::new(
                        "name-taken",
                        format!(
                            "{} already holds an app {name} that this import did not write",
                            into.display()
                        ),
                    ))
                } else {
                    write(&draft, &staging, into)
                };
                if result.is_ok() {
                    written.insert(name.clone());
                }
                Outcome {
                    source,
                    app: Some(name),
                    outcome: if result.is_ok() {
                        "imported"
                    } else {
                        "refused"
                    },
                    refusal: result.err(),
                    notes: draft.notes,
                }
            }
        };
        outcomes.push(outcome);
    }
    // What an earlier import wrote and this one did not: its source app is gone or refused.
    for name in earlier.difference(&written) {
        let _ = std::fs::remove_dir_all(into.join(name));
    }
    let names: Vec<&String> = written.iter().collect();
    let json = serde_json::to_vec_pretty(&names).map_err(|e| e.to_string())?;
    std::fs::write(&manifest, json).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(outcomes)
}

/// Writes the app into the staging folder, loads it with the daemon's loader, and only
/// then puts it in place of an earlier import's.
fn write(draft: &Draft, staging: &Path, into: &Path) -> Result<(), Refusal> {
    let name = &draft.meta.name;
    let dir = staging.join(name);
    let io = |e: std::io::Error| Refusal::new("unreadable", format!("writing {name}: {e}"));
    std::fs::create_dir_all(&dir).map_err(io)?;
    for (from, to) in &draft.files {
        copy_tree(from, &dir.join(to)).map_err(io)?;
    }
    for empty in &draft.empty_dirs {
        std::fs::create_dir_all(dir.join(empty)).map_err(io)?;
    }
    let mut meta_text = String::from(
        "# Imported by `appunit catalog import`: importing again replaces this folder.\n",
    );
    let logo_file = &draft.meta.logo;
    match &draft.logo {
        Some(path) => {
            std::fs::copy(path, dir.join(logo_file)).map_err(io)?;
        }
        None => std::fs::write(
            dir.join(logo_file),
            logo::initials_svg(&draft.meta.trademark, name),
        )
        .map_err(io)?,
    }
    meta_text.push_str(
        &toml::to_string(&draft.meta).map_err(|e| Refusal::new("invalid", e.to_string()))?,
    );
    std::fs::write(dir.join("app.toml"), meta_text).map_err(io)?;
    let compose = Value::Mapping(draft.compose.clone());
    write_compose(&dir, &compose).map_err(io)?;

    if let Err(error) = crate::catalog::check_app(&dir) {
        return Err(blockers(&dir, compose, error.message));
    }
    let target = into.join(name);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io)?;
    }
    std::fs::rename(&dir, &target).map_err(io)
}

fn write_compose(dir: &Path, compose: &Value) -> std::io::Result<()> {
    let text = serde_yaml_ng::to_string(compose).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("compose.yaml"), text)
}

/// The keys of SPEC's Compose table that today's loader refuses in this app: each is taken
/// out of a scratch copy in turn until the loader accepts it, or refuses it for something
/// that is not a key.
fn blockers(dir: &Path, mut compose: Value, first: String) -> Refusal {
    let mut blocked_by = Vec::new();
    let mut message = first;
    for _ in 0..40 {
        // `service_completed_successfully` is SPEC's; today's loader knows two conditions.
        let key = if message.contains("unknown variant `service_completed_successfully`") {
            replace_strings(
                &mut compose,
                "service_completed_successfully",
                "service_started",
            );
            "depends_on.condition: service_completed_successfully".to_string()
        } else {
            let Some((path, field)) = unknown_field(&message) else {
                break;
            };
            let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
            let Some(map) = mapping_at(&mut compose, &segments) else {
                break;
            };
            if map.remove(field.as_str()).is_none() {
                break;
            }
            match segments.as_slice() {
                ["services", _, rest @ ..] if !rest.is_empty() => {
                    format!("{}.{field}", rest.join("."))
                }
                ["volumes", _] => format!("volumes.{field}"),
                _ => field,
            }
        };
        if !blocked_by.contains(&key) {
            blocked_by.push(key);
        }
        if write_compose(dir, &compose).is_err() {
            break;
        }
        match crate::catalog::check_app(dir) {
            Ok(()) => return accepted_by_spec(blocked_by),
            Err(error) => message = error.message,
        }
    }
    match blocked_by.first() {
        Some(first) => Refusal {
            reason: format!("unsupported-key {first}"),
            detail: format!(
                "today's loader does not accept {}; then: {message}",
                blocked_by.join(", ")
            ),
            blocked_by,
            spec_accepts: false,
        },
        None => Refusal::new("invalid", message),
    }
}

fn accepted_by_spec(blocked_by: Vec<String>) -> Refusal {
    Refusal {
        reason: format!("unsupported-key {}", blocked_by[0]),
        detail: format!(
            "SPEC's Compose table accepts {}; today's loader does not yet",
            blocked_by.join(", ")
        ),
        blocked_by,
        spec_accepts: true,
    }
}

fn replace_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Mapping(m) => m.values_mut().for_each(|v| replace_strings(v, from, to)),
        Value::Sequence(items) => items.iter_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}

fn mapping_at<'a>(value: &'a mut Value, segments: &[&str]) -> Option<&'a mut Mapping> {
    match segments.split_first() {
        None => value.as_mapping_mut(),
        Some((first, rest)) => {
            let next = match value {
                Value::Mapping(m) => m.get_mut(*first)?,
                Value::Sequence(items) => items.get_mut(first.parse::<usize>().ok()?)?,
                _ => return None,
            };
            mapping_at(next, rest)
        }
    }
}

/// `key `P`: unknown field `F`, expected …` as (P, F).
fn unknown_field(message: &str) -> Option<(String, String)> {
    let path = message
        .strip_prefix("key `")?
        .split_once('`')?
        .0
        .to_string();
    let field = message
        .split_once("unknown field `")?
        .1
        .split_once('`')?
        .0
        .to_string();
    // serde_path_to_error may end the path with the field itself.
    let path = path
        .strip_suffix(&field)
        .map(|p| p.trim_end_matches('.').to_string())
        .unwrap_or(path);
    Some((path, field))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let kind = std::fs::symlink_metadata(from)?.file_type();
    if kind.is_symlink() {
        return Ok(());
    }
    if kind.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

/// A source app's name (its folder's) and the appunit app name made of it.
fn names(folder: &Path) -> Result<(String, String), Refusal> {
    let source = folder
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let name = app_name(&source)?;
    Ok((source, name))
}

/// An appunit app name from a source's: lower case, letters and digits only.
fn app_name(source: &str) -> Result<String, Refusal> {
    let name: String = source
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if name.is_empty() {
        return Err(Refusal::new(
            "invalid",
            format!("{source:?} gives no app name of [a-z0-9]"),
        ));
    }
    Ok(name)
}

/// Relative binds of the emitted services: existing sources travel with the app, missing
/// ones become empty folders (Docker makes them so); one outside the app folder is refused.
fn relative_binds(
    compose: &Mapping,
    folder: &Path,
    draft_files: &mut Vec<(PathBuf, PathBuf)>,
    empty: &mut Vec<PathBuf>,
) -> Result<(), Refusal> {
    let services = compose.get("services").and_then(Value::as_mapping);
    // Config files travel as the binds do.
    let configs: Vec<String> = compose
        .get("configs")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter_map(|(_, c)| c.get("file").and_then(normalize::text))
        .collect();
    let sources = services
        .into_iter()
        .flatten()
        .filter_map(|(_, s)| s.as_mapping())
        .flat_map(normalize::bind_sources)
        .chain(configs);
    {
        for source in sources {
            let Some(relative) = source
                .strip_prefix("./")
                .or_else(|| (source == ".").then_some(""))
            else {
                if source.starts_with("..") {
                    return Err(Refusal::new(
                        "invalid",
                        format!("bind {source} is outside the app folder"),
                    ));
                }
                continue;
            };
            let relative = PathBuf::from(relative);
            if relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Refusal::new(
                    "invalid",
                    format!("bind {source} is outside the app folder"),
                ));
            }
            let from = folder.join(&relative);
            if draft_files.iter().any(|(_, to)| relative.starts_with(to)) {
                continue;
            }
            if from.exists() {
                draft_files.push((from, relative));
            } else if !empty.contains(&relative) {
                empty.push(relative);
            }
        }
    }
    Ok(())
}

/// The one-line summary SPEC gives.
pub fn summary(outcomes: &[Outcome]) -> String {
    let imported = outcomes.iter().filter(|o| o.imported()).count();
    format!("imported {imported} of {} apps", outcomes.len())
}

//! SQLite (WAL, migrations): the only writer of app records.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE apps (
        app_id        TEXT PRIMARY KEY,
        app_name      TEXT NOT NULL,
        app_version   TEXT NOT NULL,
        status        TEXT NOT NULL,
        reason_code   TEXT,
        reason_detail TEXT,
        http_port     INTEGER NOT NULL UNIQUE,
        password      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );",
    ),
    // Records hold install phases; an app's runtime state comes from its unit.
    M::up(
        "UPDATE apps SET status = 'installed' WHERE status IN ('running', 'stopping', 'stopped');
         UPDATE apps SET status = 'failed' WHERE status = 'error';",
    ),
    // What an uninstall was asked to delete, so that one a crash cut short is finished.
    M::up(
        "ALTER TABLE apps ADD COLUMN uninstall_delete_data INTEGER;
         ALTER TABLE apps ADD COLUMN uninstall_delete_image INTEGER;",
    ),
];

/// The columns of an `AppRecord`, in `raw_record`'s order.
macro_rules! record_columns {
    () => {
        "app_id, app_name, app_version, status, reason_code, reason_detail, http_port, password"
    };
}
const SELECT: &str = concat!("SELECT ", record_columns!(), " FROM apps");

/// What AppUninstall was asked to delete besides the app itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UninstallRequest {
    pub delete_data: bool,
    pub delete_image: bool,
}

/// Where an app is in its life, as the store records it. Once `Installed`, the app's
/// state is its unit's, read from systemd: the store never caches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queuing,
    Pulling,
    Creating,
    Initing,
    Installed,
    Failed,
    Uninstalling,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Queuing,
        Phase::Pulling,
        Phase::Creating,
        Phase::Initing,
        Phase::Installed,
        Phase::Failed,
        Phase::Uninstalling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queuing => "queuing",
            Phase::Pulling => "pulling",
            Phase::Creating => "creating",
            Phase::Initing => "initing",
            Phase::Installed => "installed",
            Phase::Failed => "failed",
            Phase::Uninstalling => "uninstalling",
        }
    }

    /// Still in the install pipeline: a second install of the name must wait.
    pub fn is_installing(self) -> bool {
        matches!(
            self,
            Phase::Queuing | Phase::Pulling | Phase::Creating | Phase::Initing
        )
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Phase::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("unknown phase {text:?}"))
    }
}

/// Why an app is in `error`: a SPEC code and the cause.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReason {
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct AppRecord {
    pub app_id: String,
    pub app_name: String,
    pub app_version: String,
    pub phase: Phase,
    pub reason: Option<StatusReason>,
    pub http_port: u16,
    pub password: String,
}

pub struct NewApp<'a> {
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub app_version: &'a str,
    pub password: &'a str,
    /// The catalog's default host port; the first free one from here up is taken.
    pub default_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    #[error("an app {0:?} exists already")]
    Exists(String, Phase),
    #[error("no free host port from {0} up")]
    NoFreePort(u16),
    #[error("corrupt record {0:?}: {1}")]
    Corrupt(String, String),
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database, readable by root only: records hold
    /// generated passwords.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a queued install and allocates its host port in one transaction, so
    /// concurrent installs never share a port or a name.
    pub fn insert_queued(
        &self,
        app: &NewApp,
        host_taken: &BTreeSet<u16>,
    ) -> Result<AppRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = read_one(&tx, app.app_id)? {
            return Err(StoreError::Exists(existing.app_id, existing.phase));
        }
        let app_taken: BTreeSet<u16> = tx
            .prepare("SELECT http_port FROM apps")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let port = (app.default_port..=u16::MAX)
            .find(|p| !app_taken.contains(p) && !host_taken.contains(p))
            .ok_or(StoreError::NoFreePort(app.default_port))?;
        let now = unix_now();
        tx.execute(
            "INSERT INTO apps (app_id, app_name, app_version, status, http_port, password,
                               created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                app.app_id,
                app.app_name,
                app.app_version,
                Phase::Queuing.as_str(),
                port,
                app.password,
                now
            ],
        )?;
        let record = read_one(&tx, app.app_id)?
            .ok_or_else(|| StoreError::Corrupt(app.app_id.into(), "vanished on insert".into()))?;
        tx.commit()?;
        Ok(record)
    }

    pub fn get(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
        read_one(&self.conn(), app_id)
    }

    /// All apps sorted by app_id, or only `app_id` when a filter is given.
    pub fn list(&self, only: Option<&str>) -> Result<Vec<AppRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&format!(
            "{SELECT} WHERE ?1 IS NULL OR app_id = ?1 ORDER BY app_id"
        ))?;
        let rows = statement.query_map([only], raw_record)?;
        rows.map(|row| row?.into_record()).collect()
    }

    /// Apps in `phase`, oldest first: the install queue is `with_phase(Queuing)`.
    pub fn with_phase(&self, phase: Phase) -> Result<Vec<AppRecord>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare_cached(&format!("{SELECT} WHERE status = ?1 ORDER BY rowid"))?;
        let rows = statement.query_map([phase.as_str()], raw_record)?;
        rows.map(|row| row?.into_record()).collect()
    }

    /// Moves an app to `phase`, with the reason when it failed. False when the app is
    /// gone (uninstalled meanwhile).
    pub fn set_phase(
        &self,
        app_id: &str,
        phase: Phase,
        reason: Option<&StatusReason>,
    ) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE apps SET status = ?2, reason_code = ?3, reason_detail = ?4, updated_at = ?5
             WHERE app_id = ?1",
            params![
                app_id,
                phase.as_str(),
                reason.map(|r| r.code.as_str()),
                reason.map(|r| r.detail.as_str()),
                unix_now()
            ],
        )?;
        Ok(changed > 0)
    }

    /// Moves an app to `Uninstalling`, recording what the uninstall deletes.
    pub fn begin_uninstall(
        &self,
        app_id: &str,
        request: UninstallRequest,
        reason: Option<&StatusReason>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE apps SET status = ?2, reason_code = ?3, reason_detail = ?4, updated_at = ?5,
                             uninstall_delete_data = ?6, uninstall_delete_image = ?7
             WHERE app_id = ?1",
            params![
                app_id,
                Phase::Uninstalling.as_str(),
                reason.map(|r| r.code.as_str()),
                reason.map(|r| r.detail.as_str()),
                unix_now(),
                request.delete_data,
                request.delete_image,
            ],
        )?;
        Ok(())
    }

    /// Uninstalls under way (cut short, when the daemon starts) with what they delete.
    /// One recorded before the request was kept deletes neither data nor image.
    pub fn pending_uninstalls(&self) -> Result<Vec<(AppRecord, UninstallRequest)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(concat!(
            "SELECT ",
            record_columns!(),
            ", uninstall_delete_data, uninstall_delete_image FROM apps
             WHERE status = ?1 ORDER BY rowid"
        ))?;
        let rows = statement.query_map([Phase::Uninstalling.as_str()], |row| {
            let request = UninstallRequest {
                delete_data: row.get::<_, Option<bool>>(8)?.unwrap_or(false),
                delete_image: row.get::<_, Option<bool>>(9)?.unwrap_or(false),
            };
            Ok((raw_record(row)?, request))
        })?;
        rows.map(|row| {
            let (raw, request) = row?;
            Ok((raw.into_record()?, request))
        })
        .collect()
    }

    /// Removes the record; false when there was none.
    pub fn delete(&self, app_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM apps WHERE app_id = ?1", [app_id])?
            > 0)
    }
}

/// A row as SQLite gives it, before the status text is checked.
struct RawRecord {
    app_id: String,
    app_name: String,
    app_version: String,
    status: String,
    reason_code: Option<String>,
    reason_detail: Option<String>,
    http_port: u16,
    password: String,
}

fn raw_record(row: &rusqlite::Row) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        app_id: row.get(0)?,
        app_name: row.get(1)?,
        app_version: row.get(2)?,
        status: row.get(3)?,
        reason_code: row.get(4)?,
        reason_detail: row.get(5)?,
        http_port: row.get(6)?,
        password: row.get(7)?,
    })
}

impl RawRecord {
    fn into_record(self) -> Result<AppRecord, StoreError> {
        let phase = self
            .status
            .parse()
            .map_err(|e| StoreError::Corrupt(self.app_id.clone(), e))?;
        Ok(AppRecord {
            reason: self.reason_code.map(|code| StatusReason {
                code,
                detail: self.reason_detail.unwrap_or_default(),
            }),
            app_id: self.app_id,
            app_name: self.app_name,
            app_version: self.app_version,
            phase,
            http_port: self.http_port,
            password: self.password,
        })
    }
}

fn read_one(conn: &Connection, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
    conn.prepare_cached(&format!("{SELECT} WHERE app_id = ?1"))?
        .query_row([app_id], raw_record)
        .optional()?
        .map(RawRecord::into_record)
        .transpose()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_app<'a>(id: &'a str) -> NewApp<'a> {
        NewApp {
            app_id: id,
            app_name: "wordpress",
            app_version: "6.8",
            password: "secret",
            default_port: 9001,
        }
    }

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    #[test]
    fn insert_allocates_ports_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let taken = BTreeSet::from([9002]);
        let a = store.insert_queued(&new_app("aa"), &taken).unwrap();
        let b = store.insert_queued(&new_app("bb"), &taken).unwrap();
        assert_eq!((a.http_port, b.http_port), (9001, 9003));
        assert_eq!(a.phase, Phase::Queuing);
        assert!(matches!(
            store.insert_queued(&new_app("aa"), &taken),
            Err(StoreError::Exists(_, Phase::Queuing))
        ));
        let ids: Vec<String> = store
            .list(None)
            .unwrap()
            .into_iter()
            .map(|r| r.app_id)
            .collect();
        assert_eq!(ids, ["aa", "bb"]);
        assert_eq!(store.list(Some("bb")).unwrap().len(), 1);
        assert!(store.delete("aa").unwrap());
        assert!(!store.delete("aa").unwrap());
        assert!(store.get("aa").unwrap().is_none());
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Store::open(&path)
            .unwrap()
            .insert_queued(&new_app("keep"), &BTreeSet::new())
            .unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("keep").unwrap().unwrap().password, "secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_uninstall_keeps_what_it_deletes_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        for app_id in ["aa", "bb", "cc"] {
            store
                .insert_queued(&new_app(app_id), &BTreeSet::new())
                .unwrap();
        }
        let keep_data = UninstallRequest {
            delete_data: false,
            delete_image: true,
        };
        store.begin_uninstall("bb", keep_data, None).unwrap();
        // Recorded before the request was: deletes nothing extra.
        store.set_phase("cc", Phase::Uninstalling, None).unwrap();
        let pending = Store::open(&path).unwrap().pending_uninstalls().unwrap();
        let pending: Vec<_> = pending
            .iter()
            .map(|(record, request)| (record.app_id.as_str(), record.phase, *request))
            .collect();
        let nothing = UninstallRequest {
            delete_data: false,
            delete_image: false,
        };
        assert_eq!(
            pending,
            [
                ("bb", Phase::Uninstalling, keep_data),
                ("cc", Phase::Uninstalling, nothing)
            ]
        );
    }

    #[test]
    fn phase_text_round_trips() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
    }

    #[test]
    fn phases_and_reasons_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .insert_queued(&new_app("aa"), &BTreeSet::new())
            .unwrap();
        store
            .insert_queued(&new_app("bb"), &BTreeSet::new())
            .unwrap();
        let reason = StatusReason {
            code: "Server.Container.Error".into(),
            detail: "pull failed".into(),
        };
        assert!(store.set_phase("aa", Phase::Failed, Some(&reason)).unwrap());
        assert!(!store.set_phase("zz", Phase::Failed, None).unwrap());
        let failed = store.get("aa").unwrap().unwrap();
        assert_eq!((failed.phase, failed.reason), (Phase::Failed, Some(reason)));
        let queued: Vec<String> = store
            .with_phase(Phase::Queuing)
            .unwrap()
            .into_iter()
            .map(|r| r.app_id)
            .collect();
        assert_eq!(queued, ["bb"]);
    }
}

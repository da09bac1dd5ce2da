//! SQLite (WAL, migrations): the only writer of app records.

pub mod operation;
pub mod phase;

use crate::error::Code;
pub use operation::{LastOperation, OperationInfo, OperationKind, OperationResult};
pub use phase::{Phase, Transition};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    // Which install of a name a record is: work for an earlier install of the same name
    // must not move a later one.
    M::up("ALTER TABLE apps ADD COLUMN serial INTEGER NOT NULL DEFAULT 0;"),
    // Every host port an install publishes, beside the web port: claimed in one
    // transaction with the check that no other app holds it.
    M::up(
        "CREATE TABLE ports (
        app_id    TEXT NOT NULL,
        host_ip   TEXT NOT NULL,
        host_port INTEGER NOT NULL,
        protocol  TEXT NOT NULL
    );
    CREATE INDEX ports_by_app ON ports (app_id);",
    ),
    // The operation under way on an app (install, upgrade, backup, restore) and how the
    // last one ended: AppStatusInfo's `operation` and `last_operation`.
    M::up(
        "ALTER TABLE apps ADD COLUMN op_kind TEXT;
         ALTER TABLE apps ADD COLUMN op_from TEXT;
         ALTER TABLE apps ADD COLUMN op_to TEXT;
         ALTER TABLE apps ADD COLUMN op_source TEXT;
         ALTER TABLE apps ADD COLUMN last_kind TEXT;
         ALTER TABLE apps ADD COLUMN last_result TEXT;
         ALTER TABLE apps ADD COLUMN last_reason_code TEXT;
         ALTER TABLE apps ADD COLUMN last_reason_detail TEXT;
         ALTER TABLE apps ADD COLUMN last_finished INTEGER;
         ALTER TABLE apps ADD COLUMN last_downtime_ms INTEGER;",
    ),
];

/// The columns of an `AppRecord`, in `raw_record`'s order.
macro_rules! record_columns {
    () => {
        "app_id, app_name, app_version, status, reason_code, reason_detail, http_port, password, serial, \
         op_kind, op_from, op_to, op_source, last_kind, last_result, last_reason_code, last_reason_detail, \
         last_finished, last_downtime_ms"
    };
}
const SELECT: &str = concat!("SELECT ", record_columns!(), " FROM apps");

/// What AppUninstall was asked to delete besides the app itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UninstallRequest {
    pub delete_data: bool,
    pub delete_image: bool,
}

/// Why an app is in `error`: a SPEC code and the cause.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReason {
    pub code: Code,
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
    /// Tells this install of the name from earlier and later ones.
    pub serial: i64,
    /// The operation under way, if any.
    pub operation: Option<OperationInfo>,
    /// How the last operation ended.
    pub last_operation: Option<LastOperation>,
}

pub struct NewApp<'a> {
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub app_version: &'a str,
    pub password: &'a str,
    /// The catalog's default host port; the first free one from here up is taken.
    pub default_port: u16,
    /// Only `default_port` will do: the web service listens on it on the host's network.
    pub fixed_port: bool,
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
    #[error("host port {0} is taken: the app's web service listens on it on the host's network")]
    FixedPortTaken(u16),
    #[error("{0}: {1}")]
    Busy(String, String),
    #[error("corrupt record {0:?}: {1}")]
    Corrupt(String, String),
    #[error("{transition:?} of {app_id} refused: {}", found.map_or("it is gone (or installed anew)".to_string(), |p| format!("it is {}", p.as_str())))]
    Refused {
        app_id: String,
        transition: Transition,
        found: Option<Phase>,
    },
    #[error("database worker: {0}")]
    Worker(String),
    #[error("host port {port} is taken by {holder}")]
    PortTaken { port: HostPort, holder: String },
}

/// A port published on the host: an address ("" for all of them), a port, a protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub port: u16,
    pub protocol: String,
}

impl HostPort {
    /// Two publications clash on the same port and protocol unless both name an address
    /// and the addresses differ.
    fn clashes(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip.is_empty() || other.ip.is_empty() || self.ip == other.ip)
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip.as_str() {
            "" => write!(f, "{}/{}", self.port, self.protocol),
            ip => write!(f, "{ip}:{}/{}", self.port, self.protocol),
        }
    }
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

    /// Runs `work` on a blocking thread, so SQLite never stalls the async workers.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
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
        self.insert_queued_for(app, OperationKind::Install, None, host_taken)
    }

    /// Records a queued install that `kind` runs: an install, or a restore of the
    /// backup `source`.
    pub fn insert_queued_for(
        &self,
        app: &NewApp,
        kind: OperationKind,
        source: Option<&str>,
        host_taken: &BTreeSet<u16>,
    ) -> Result<AppRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = read_one(&tx, app.app_id)? {
            return Err(StoreError::Exists(existing.app_id, existing.phase));
        }
        let app_taken: BTreeSet<u16> = tx
            .prepare("SELECT http_port FROM apps UNION SELECT host_port FROM ports")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let free = |p: &u16| !app_taken.contains(p) && !host_taken.contains(p);
        let port = if app.fixed_port {
            Some(app.default_port)
                .filter(free)
                .ok_or(StoreError::FixedPortTaken(app.default_port))?
        } else {
            (app.default_port..=u16::MAX)
                .find(free)
                .ok_or(StoreError::NoFreePort(app.default_port))?
        };
        let now = unix_now();
        tx.execute(
            "INSERT INTO apps (app_id, app_name, app_version, status, http_port, password,
                               created_at, updated_at, serial, op_kind, op_to, op_source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?3, ?10)",
            params![
                app.app_id,
                app.app_name,
                app.app_version,
                Phase::Queuing.as_str(),
                port,
                app.password,
                now,
                rand::random_range(1..i64::MAX),
                kind.as_str(),
                source,
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

    /// Applies `transition` to this install of the app, with the reason of a failure;
    /// the phase it left. Refused when the app is in no phase the transition starts
    /// from, is gone, or is a later install of the same name.
    pub fn transition(
        &self,
        app: &AppRecord,
        transition: Transition,
        reason: Option<&StatusReason>,
    ) -> Result<Phase, StoreError> {
        self.apply(app, transition, reason, None, None)
    }

    /// Ends an upgrade with `transition` (`Started` or `RollBack`), recording how long
    /// the app served nothing (None: not known, after a crash).
    pub fn end_upgrade(
        &self,
        app: &AppRecord,
        transition: Transition,
        reason: Option<&StatusReason>,
        downtime_ms: Option<u64>,
    ) -> Result<Phase, StoreError> {
        self.apply(app, transition, reason, None, downtime_ms)
    }

    /// Moves the app to `Uninstalling`, recording what the uninstall deletes, so that one
    /// a crash cuts short is finished as asked.
    pub fn begin_uninstall(
        &self,
        app: &AppRecord,
        request: UninstallRequest,
    ) -> Result<Phase, StoreError> {
        self.apply(app, Transition::Uninstall, None, Some(request), None)
    }

    fn apply(
        &self,
        app: &AppRecord,
        transition: Transition,
        reason: Option<&StatusReason>,
        request: Option<UninstallRequest>,
        downtime_ms: Option<u64>,
    ) -> Result<Phase, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let from = apply_in(&tx, app, transition, reason, request, downtime_ms)?;
        tx.commit()?;
        Ok(from)
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
                delete_data: row.get::<_, Option<bool>>(19)?.unwrap_or(false),
                delete_image: row.get::<_, Option<bool>>(20)?.unwrap_or(false),
            };
            Ok((raw_record(row)?, request))
        })?;
        rows.map(|row| {
            let (raw, request) = row?;
            Ok((raw.into_record()?, request))
        })
        .collect()
    }

    /// Claims every host port this install publishes. Refused with the holder when
    /// another app publishes a clashing one (its web port or a claimed port) or when
    /// `host_busy` says a socket of the host has it; a claim made earlier by this app
    /// (an install resumed after a crash) is replaced.
    pub fn claim_ports(
        &self,
        app: &AppRecord,
        ports: &[HostPort],
        host_busy: impl Fn(&HostPort) -> bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = read_one(&tx, &app.app_id)?
            .filter(|record| record.serial == app.serial)
            .map(|record| record.phase);
        if found != Some(Phase::Pulling) {
            return Err(StoreError::Refused {
                app_id: app.app_id.clone(),
                transition: Transition::Pulled,
                found,
            });
        }
        let others: Vec<(String, HostPort)> = tx
            .prepare(
                "SELECT app_id, host_ip, host_port, protocol FROM ports WHERE app_id != ?1
                 UNION ALL SELECT app_id, '', http_port, 'tcp' FROM apps WHERE app_id != ?1",
            )?
            .query_map([&app.app_id], |row| {
                let port = HostPort {
                    ip: row.get(1)?,
                    port: row.get(2)?,
                    protocol: row.get(3)?,
                };
                Ok((row.get(0)?, port))
            })?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM ports WHERE app_id = ?1", [&app.app_id])?;
        for port in ports {
            let holder = others
                .iter()
                .find(|(_, other)| other.clashes(port))
                .map(|(holder, _)| format!("app {holder}"))
                .or_else(|| host_busy(port).then(|| "a program listening on the host".into()));
            if let Some(holder) = holder {
                return Err(StoreError::PortTaken {
                    port: port.clone(),
                    holder,
                });
            }
            tx.execute(
                "INSERT INTO ports (app_id, host_ip, host_port, protocol) VALUES (?1, ?2, ?3, ?4)",
                params![app.app_id, port.ip, port.port, port.protocol],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the record of an uninstalled app, and its ports: the end of its life.
    pub fn remove(&self, app: &AppRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx.execute(
            "DELETE FROM apps WHERE app_id = ?1 AND serial = ?2 AND status = ?3",
            params![app.app_id, app.serial, Phase::Uninstalling.as_str()],
        )?;
        if removed == 0 {
            drop(tx);
            return Err(StoreError::Refused {
                app_id: app.app_id.clone(),
                transition: Transition::Uninstall,
                found: read_one(&conn, &app.app_id)?.map(|record| record.phase),
            });
        }
        tx.execute("DELETE FROM ports WHERE app_id = ?1", [&app.app_id])?;
        tx.commit()?;
        Ok(())
    }
}

/// A transition inside the caller's transaction: the compare-and-set, and what ends with
/// it (the operation, a failed install's ports, an upgrade's new version).
fn apply_in(
    tx: &Connection,
    app: &AppRecord,
    transition: Transition,
    reason: Option<&StatusReason>,
    request: Option<UninstallRequest>,
    downtime_ms: Option<u64>,
) -> Result<Phase, StoreError> {
    let found = read_one(tx, &app.app_id)?
        .filter(|record| record.serial == app.serial)
        .map(|record| record.phase);
    let from = found
        .filter(|phase| transition.may_start_from(*phase))
        .ok_or_else(|| StoreError::Refused {
            app_id: app.app_id.clone(),
            transition,
            found,
        })?;
    tx.execute(
        "UPDATE apps SET status = ?3, reason_code = ?4, reason_detail = ?5, updated_at = ?6,
                         uninstall_delete_data = coalesce(?7, uninstall_delete_data),
                         uninstall_delete_image = coalesce(?8, uninstall_delete_image)
         WHERE app_id = ?1 AND serial = ?2",
        params![
            app.app_id,
            app.serial,
            transition.target().as_str(),
            reason.map(|r| r.code.as_str()),
            reason.map(|r| r.detail.as_str()),
            unix_now(),
            request.map(|r| r.delete_data),
            request.map(|r| r.delete_image),
        ],
    )?;
    // A failed install publishes nothing: its ports are free for others.
    if transition == Transition::Fail {
        tx.execute("DELETE FROM ports WHERE app_id = ?1", [&app.app_id])?;
    }
    // The install (or restore, or upgrade) ends with the pipeline; an upgrade that
    // ends well makes its version the app's.
    match transition {
        Transition::Started => {
            tx.execute(
                "UPDATE apps SET app_version = op_to
                 WHERE app_id = ?1 AND serial = ?2 AND op_kind = 'upgrade' AND op_to IS NOT NULL",
                params![app.app_id, app.serial],
            )?;
            operation::end(tx, app, OperationResult::Succeeded, None, downtime_ms)?;
        }
        Transition::Fail => operation::end(tx, app, OperationResult::Failed, reason, None)?,
        Transition::RollBack => {
            operation::end(tx, app, OperationResult::RolledBack, reason, downtime_ms)?;
        }
        _ => {}
    }
    Ok(from)
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
    serial: i64,
    operation: operation::RawOperation,
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
        serial: row.get(8)?,
        operation: operation::RawOperation::read(row, 9)?,
    })
}

impl RawRecord {
    fn into_record(self) -> Result<AppRecord, StoreError> {
        let phase = self
            .status
            .parse()
            .map_err(|e| StoreError::Corrupt(self.app_id.clone(), e))?;
        let reason = match self.reason_code {
            Some(code) => Some(StatusReason {
                code: Code::parse(&code).ok_or_else(|| {
                    StoreError::Corrupt(self.app_id.clone(), format!("unknown code {code:?}"))
                })?,
                detail: self.reason_detail.unwrap_or_default(),
            }),
            None => None,
        };
        let (operation, last_operation) = self.operation.into_parts(&self.app_id)?;
        Ok(AppRecord {
            operation,
            last_operation,
            reason,
            app_id: self.app_id,
            app_name: self.app_name,
            app_version: self.app_version,
            phase,
            http_port: self.http_port,
            password: self.password,
            serial: self.serial,
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
            fixed_port: false,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("db")).unwrap()
    }

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    #[test]
    fn insert_allocates_ports_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let taken = BTreeSet::from([9002]);
        let a = store.insert_queued(&new_app("aa"), &taken).unwrap();
        let b = store.insert_queued(&new_app("bb"), &taken).unwrap();
        assert_eq!((a.http_port, b.http_port), (9001, 9003));
        assert_eq!(a.phase, Phase::Queuing);
        assert_ne!(a.serial, b.serial);
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
    }

    #[test]
    fn claims_refuse_clashes_and_fail_releases_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let none = BTreeSet::new();
        let port = |ip: &str, port| HostPort {
            ip: ip.into(),
            port,
            protocol: "tcp".into(),
        };
        let pulling = |id| {
            let app = store.insert_queued(&new_app(id), &none).unwrap();
            store.transition(&app, Transition::Dequeue, None).unwrap();
            app
        };
        let (a, b) = (pulling("aa"), pulling("bb"));
        let free = |_: &HostPort| false;
        store
            .claim_ports(&a, &[port("", 9001), port("127.0.0.1", 5432)], free)
            .unwrap();
        // Another address of the same port is no clash; every address is.
        store
            .claim_ports(&b, &[port("127.0.0.2", 5432)], free)
            .unwrap();
        let clash = store.claim_ports(&b, &[port("", 5432)], free);
        assert!(
            matches!(&clash, Err(StoreError::PortTaken { holder, .. }) if holder == "app aa"),
            "{clash:?}"
        );
        // B's web port is B's, not a clash with itself; A's web port is.
        assert!(store.claim_ports(&b, &[port("", 9002)], free).is_ok());
        assert!(store.claim_ports(&b, &[port("", 9001)], free).is_err());
        let busy = store.claim_ports(&b, &[port("", 6379)], |p: &HostPort| p.port == 6379);
        assert!(matches!(busy, Err(StoreError::PortTaken { .. })));
        // A new web port avoids claimed ports; a failed install frees its claims.
        let c = store
            .insert_queued(
                &NewApp {
                    default_port: 5432,
                    ..new_app("cc")
                },
                &none,
            )
            .unwrap();
        assert_eq!(c.http_port, 5433);
        store.transition(&a, Transition::Fail, None).unwrap();
        store.claim_ports(&b, &[port("", 5432)], free).unwrap();
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        open(&dir)
            .insert_queued(&new_app("keep"), &BTreeSet::new())
            .unwrap();
        let store = open(&dir);
        assert_eq!(store.get("keep").unwrap().unwrap().password, "secret");
        let mode = std::fs::metadata(dir.path().join("db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_uninstall_keeps_what_it_deletes_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let keep_data = UninstallRequest {
            delete_data: false,
            delete_image: true,
        };
        let bb = store
            .insert_queued(&new_app("bb"), &BTreeSet::new())
            .unwrap();
        store
            .insert_queued(&new_app("cc"), &BTreeSet::new())
            .unwrap();
        assert_eq!(
            store.begin_uninstall(&bb, keep_data).unwrap(),
            Phase::Queuing
        );
        let pending = open(&dir).pending_uninstalls().unwrap();
        let pending: Vec<_> = pending
            .iter()
            .map(|(record, request)| (record.app_id.as_str(), record.phase, *request))
            .collect();
        assert_eq!(pending, [("bb", Phase::Uninstalling, keep_data)]);
        store.remove(&bb).unwrap();
        assert!(store.get("bb").unwrap().is_none());
        assert!(store.pending_uninstalls().unwrap().is_empty());
    }

    /// Every transition from every phase, against the store: legal ones move the
    /// record and answer the phase left, illegal ones change nothing.
    #[test]
    fn transitions_are_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let reason = StatusReason {
            code: Code::ContainerError,
            detail: "pull failed".into(),
        };
        for transition in Transition::ALL {
            for from in Phase::ALL {
                let app = store
                    .insert_queued(&new_app("aa"), &BTreeSet::new())
                    .unwrap();
                store
                    .conn()
                    .execute(
                        "UPDATE apps SET status = ?1 WHERE app_id = 'aa'",
                        [from.as_str()],
                    )
                    .unwrap();
                let outcome = store.transition(&app, transition, Some(&reason));
                let now = store.get("aa").unwrap().unwrap();
                if transition.may_start_from(from) {
                    assert_eq!(outcome.unwrap(), from, "{transition:?} from {from:?}");
                    assert_eq!(now.phase, transition.target());
                    assert_eq!(now.reason.as_ref(), Some(&reason));
                } else {
                    assert!(
                        matches!(outcome, Err(StoreError::Refused { found: Some(f), .. }) if f == from),
                        "{transition:?} from {from:?}: {outcome:?}"
                    );
                    assert_eq!(now.phase, from);
                }
                store.conn().execute("DELETE FROM apps", []).unwrap();
            }
        }
    }

    #[test]
    fn an_earlier_install_of_a_name_cannot_move_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let first = store
            .insert_queued(&new_app("aa"), &BTreeSet::new())
            .unwrap();
        store.transition(&first, Transition::Dequeue, None).unwrap();
        let nothing = UninstallRequest {
            delete_data: true,
            delete_image: false,
        };
        store.begin_uninstall(&first, nothing).unwrap();
        store.remove(&first).unwrap();
        let second = store
            .insert_queued(&new_app("aa"), &BTreeSet::new())
            .unwrap();
        // The first install's pipeline, still running, tries to go on.
        assert!(matches!(
            store.transition(&first, Transition::Pulled, None),
            Err(StoreError::Refused { found: None, .. })
        ));
        assert!(store.transition(&first, Transition::Dequeue, None).is_err());
        assert!(store.remove(&first).is_err());
        assert_eq!(store.get("aa").unwrap().unwrap().serial, second.serial);
        assert_eq!(store.get("aa").unwrap().unwrap().phase, Phase::Queuing);
    }
}

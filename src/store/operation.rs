//! The operation under way on an app and how the last one ended (SPEC `operation`,
//! `last_operation`). Kept in the app's record, so a daemon that restarts knows what
//! was under way; written by the store only, compared on the record's serial.

use super::{AppRecord, StatusReason, Store, StoreError, read_one, unix_now};
use crate::error::Code;
use rusqlite::{Connection, TransactionBehavior, params};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Install,
    Upgrade,
    Backup,
    Restore,
}

impl OperationKind {
    pub const ALL: [OperationKind; 4] = [
        OperationKind::Install,
        OperationKind::Upgrade,
        OperationKind::Backup,
        OperationKind::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Install => "install",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Backup => "backup",
            OperationKind::Restore => "restore",
        }
    }

    fn parse(text: &str) -> Option<OperationKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationResult {
    Succeeded,
    RolledBack,
    Failed,
}

impl OperationResult {
    const ALL: [OperationResult; 3] = [
        OperationResult::Succeeded,
        OperationResult::RolledBack,
        OperationResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationResult::Succeeded => "succeeded",
            OperationResult::RolledBack => "rolled_back",
            OperationResult::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<OperationResult> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// An operation under way.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationInfo {
    pub kind: OperationKind,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// What it works from: a restore's backup.
    pub source: Option<String>,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LastOperation {
    pub kind: OperationKind,
    pub result: OperationResult,
    pub reason: Option<StatusReason>,
    /// Unix seconds.
    pub finished: i64,
    pub downtime_ms: Option<u64>,
}

/// The operation columns of a row, before their texts are checked.
pub(super) struct RawOperation {
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    source: Option<String>,
    last_kind: Option<String>,
    last_result: Option<String>,
    last_code: Option<String>,
    last_detail: Option<String>,
    last_finished: Option<i64>,
    last_downtime_ms: Option<i64>,
}

impl RawOperation {
    /// The ten columns from `first` on, in `record_columns!`'s order.
    pub(super) fn read(row: &rusqlite::Row, first: usize) -> rusqlite::Result<RawOperation> {
        Ok(RawOperation {
            kind: row.get(first)?,
            from: row.get(first + 1)?,
            to: row.get(first + 2)?,
            source: row.get(first + 3)?,
            last_kind: row.get(first + 4)?,
            last_result: row.get(first + 5)?,
            last_code: row.get(first + 6)?,
            last_detail: row.get(first + 7)?,
            last_finished: row.get(first + 8)?,
            last_downtime_ms: row.get(first + 9)?,
        })
    }

    pub(super) fn into_parts(
        self,
        app_id: &str,
    ) -> Result<(Option<OperationInfo>, Option<LastOperation>), StoreError> {
        let corrupt = |what: &str, text: &str| {
            StoreError::Corrupt(app_id.to_string(), format!("unknown {what} {text:?}"))
        };
        let kind =
            |text: &str| OperationKind::parse(text).ok_or_else(|| corrupt("operation", text));
        let operation = match self.kind {
            Some(text) => Some(OperationInfo {
                kind: kind(&text)?,
                from_version: self.from,
                to_version: self.to,
                source: self.source,
            }),
            None => None,
        };
        let last = match (self.last_kind, self.last_result) {
            (Some(last_kind), Some(result)) => Some(LastOperation {
                kind: kind(&last_kind)?,
                result: OperationResult::parse(&result)
                    .ok_or_else(|| corrupt("operation result", &result))?,
                reason: match self.last_code {
                    Some(code) => Some(StatusReason {
                        code: Code::parse(&code).ok_or_else(|| corrupt("code", &code))?,
                        detail: self.last_detail.unwrap_or_default(),
                    }),
                    None => None,
                },
                finished: self.last_finished.unwrap_or_default(),
                downtime_ms: self.last_downtime_ms.map(|ms| ms.max(0) as u64),
            }),
            _ => None,
        };
        Ok((operation, last))
    }
}

/// Ends the app's operation: it becomes the last one. `downtime_ms` None keeps none.
pub(super) fn end(
    conn: &Connection,
    app: &AppRecord,
    result: OperationResult,
    reason: Option<&StatusReason>,
    downtime_ms: Option<u64>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE apps SET last_kind = coalesce(op_kind, 'install'), last_result = ?3,
                         last_reason_code = ?4, last_reason_detail = ?5, last_finished = ?6,
                         last_downtime_ms = ?7, op_kind = NULL, op_from = NULL, op_to = NULL,
                         op_source = NULL
         WHERE app_id = ?1 AND serial = ?2",
        params![
            app.app_id,
            app.serial,
            result.as_str(),
            reason.map(|r| r.code.as_str()),
            reason.map(|r| r.detail.as_str()),
            unix_now(),
            downtime_ms.map(|ms| ms as i64),
        ],
    )?;
    Ok(())
}

impl Store {
    /// Marks `info` as under way on an installed app; Busy when another operation is
    /// recorded or the record changed (another install of the name).
    pub fn begin_operation(
        &self,
        app: &AppRecord,
        info: &OperationInfo,
    ) -> Result<AppRecord, StoreError> {
        self.begin_with(app, info, |_| Ok(()))
    }

    /// Ends the app's operation with its outcome.
    pub fn end_operation(
        &self,
        app: &AppRecord,
        result: OperationResult,
        reason: Option<&StatusReason>,
        downtime_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        end(&self.conn(), app, result, reason, downtime_ms)
    }

    /// Begins an upgrade of an installed app in one transaction: the operation is
    /// recorded and the app enters the install's phases (`Transition::Upgrade`).
    /// Busy when another operation is under way; Refused when the app is not installed.
    pub fn begin_upgrade(
        &self,
        app: &AppRecord,
        info: &OperationInfo,
    ) -> Result<AppRecord, StoreError> {
        self.begin_with(app, info, |tx| {
            super::apply_in(tx, app, super::Transition::Upgrade, None, None, None).map(drop)
        })
    }

    /// Records `info` as under way unless another operation is, and does `also` in
    /// the same transaction; the record as it then is.
    fn begin_with(
        &self,
        app: &AppRecord,
        info: &OperationInfo,
        also: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> Result<AppRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE apps SET op_kind = ?3, op_from = ?4, op_to = ?5, op_source = ?7,
                             updated_at = ?6
             WHERE app_id = ?1 AND serial = ?2 AND op_kind IS NULL",
            params![
                app.app_id,
                app.serial,
                info.kind.as_str(),
                info.from_version,
                info.to_version,
                unix_now(),
                info.source,
            ],
        )?;
        if changed == 0 {
            let busy = match read_one(&tx, &app.app_id)?.and_then(|r| r.operation) {
                Some(other) => format!("{} is under way", other.kind.as_str()),
                None => "the app changed meanwhile".into(),
            };
            return Err(StoreError::Busy(app.app_id.clone(), busy));
        }
        also(&tx)?;
        let record = read_one(&tx, &app.app_id)?
            .ok_or_else(|| StoreError::Corrupt(app.app_id.clone(), "vanished".into()))?;
        tx.commit()?;
        Ok(record)
    }

    /// Apps with an operation recorded as under way: at start-up, ones a crash cut short.
    pub fn with_operation(&self, kind: OperationKind) -> Result<Vec<AppRecord>, StoreError> {
        Ok(self
            .list(None)?
            .into_iter()
            .filter(|r| r.operation.as_ref().is_some_and(|o| o.kind == kind))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewApp, Phase, Transition};
    use std::collections::BTreeSet;

    fn opened() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    /// Walks the app through every install phase.
    fn installed(store: &Store, app: &AppRecord) {
        for step in [
            Transition::Dequeue,
            Transition::Pulled,
            Transition::Created,
            Transition::Started,
        ] {
            store.transition(app, step, None).unwrap();
        }
    }

    fn new_app<'a>(app_id: &'a str, app_name: &'a str, app_version: &'a str) -> NewApp<'a> {
        NewApp {
            app_id,
            app_name,
            app_version,
            password: "secret",
            default_port: 9001,
            fixed_port: false,
        }
    }

    #[test]
    fn installs_and_operations_end_as_last_operation() {
        let (_dir, store) = opened();
        let new = new_app("aa", "wordpress", "6.8");
        let app = store
            .insert_queued_for(
                &new,
                OperationKind::Restore,
                Some("b.tar.zst"),
                &BTreeSet::new(),
            )
            .unwrap();
        let running = app.operation.clone().unwrap();
        assert_eq!(running.kind, OperationKind::Restore);
        assert_eq!(running.to_version.as_deref(), Some("6.8"));
        assert_eq!(running.source.as_deref(), Some("b.tar.zst"));
        installed(&store, &app);
        let done = store.get("aa").unwrap().unwrap();
        assert!(done.operation.is_none());
        let last = done.last_operation.clone().unwrap();
        assert_eq!(
            (last.kind, last.result),
            (OperationKind::Restore, OperationResult::Succeeded)
        );
        let backup = OperationInfo {
            kind: OperationKind::Backup,
            from_version: None,
            to_version: None,
            source: None,
        };
        let busy = store.begin_operation(&done, &backup).unwrap();
        let again = store.begin_operation(&done, &backup);
        assert!(matches!(again, Err(StoreError::Busy(..))), "{again:?}");
        assert_eq!(
            store.with_operation(OperationKind::Backup).unwrap().len(),
            1
        );
        let reason = StatusReason {
            code: Code::RequirementNotEnough,
            detail: "full".into(),
        };
        store
            .end_operation(&busy, OperationResult::Failed, Some(&reason), Some(12))
            .unwrap();
        let last = store.get("aa").unwrap().unwrap().last_operation.unwrap();
        assert_eq!(last.kind, OperationKind::Backup);
        assert_eq!(last.reason, Some(reason));
        assert_eq!(last.downtime_ms, Some(12));
    }

    #[test]
    fn upgrades_end_with_the_new_version_or_roll_back_to_the_old() {
        let (_dir, store) = opened();
        let new = new_app("up", "duo", "1");
        let app = store.insert_queued(&new, &BTreeSet::new()).unwrap();
        installed(&store, &app);
        let upgrade = |to: &str| OperationInfo {
            kind: OperationKind::Upgrade,
            from_version: Some("1".into()),
            to_version: Some(to.into()),
            source: None,
        };
        let installed = store.get("up").unwrap().unwrap();
        let busy = store.begin_upgrade(&installed, &upgrade("bad")).unwrap();
        assert_eq!(busy.phase, Phase::Pulling);
        let again = store.begin_upgrade(&busy, &upgrade("bad"));
        assert!(matches!(again, Err(StoreError::Busy(..))), "{again:?}");
        let reason = StatusReason {
            code: Code::ContainerError,
            detail: "health".into(),
        };
        store
            .transition(&busy, Transition::RollBack, Some(&reason))
            .unwrap();
        let back = store.get("up").unwrap().unwrap();
        assert_eq!(
            (back.phase, back.app_version.as_str()),
            (Phase::Installed, "1")
        );
        let last = back.last_operation.clone().unwrap();
        assert_eq!(
            (last.kind, last.result, last.reason),
            (
                OperationKind::Upgrade,
                OperationResult::RolledBack,
                Some(reason)
            )
        );
        let busy = store.begin_upgrade(&back, &upgrade("2")).unwrap();
        for step in [Transition::Pulled, Transition::Created, Transition::Started] {
            store.transition(&busy, step, None).unwrap();
        }
        let done = store.get("up").unwrap().unwrap();
        assert_eq!(
            (done.phase, done.app_version.as_str()),
            (Phase::Installed, "2")
        );
        assert!(done.operation.is_none() && done.reason.is_none());
        assert_eq!(
            done.last_operation.unwrap().result,
            OperationResult::Succeeded
        );
    }
}

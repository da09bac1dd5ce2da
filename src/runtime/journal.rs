//! An app's logs, read from the journal where systemd keeps them (the supervisor relays
//! each container's output there, tagged with its service name): no second copy.

use serde::Serialize;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// One line of an app's log, as AppLogs answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    /// The container's service name (or `appunitd` for the supervisor, `systemd` for
    /// the unit's own messages).
    pub service: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("running journalctl: {0}")]
    Spawn(std::io::Error),
    #[error("journalctl: {0}")]
    Failed(String),
}

/// journalctl for the last `lines` entries of `unit`'s journal, only those of
/// `service` when one is given.
fn journalctl(unit: &str, service: Option<&str>, lines: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("journalctl");
    command
        .args(["--no-pager", "--output=json", "--unit", unit])
        .arg(format!("--lines={lines}"));
    if let Some(service) = service {
        // Another field than the unit's: journalctl ANDs the two.
        command.arg(format!("SYSLOG_IDENTIFIER={service}"));
    }
    command
}

/// The last `lines` entries, oldest first.
pub async fn tail(
    unit: &str,
    service: Option<&str>,
    lines: u32,
) -> Result<Vec<LogEntry>, JournalError> {
    let output = journalctl(unit, service, lines)
        .output()
        .await
        .map_err(JournalError::Spawn)?;
    if !output.status.success() {
        return Err(JournalError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| parse_entry(&entry))
        .collect())
}

/// The last `lines` entries, then every new one as it is written, until the receiver
/// is dropped (journalctl goes with it).
pub fn follow(
    unit: &str,
    service: Option<&str>,
    lines: u32,
) -> Result<mpsc::Receiver<LogEntry>, JournalError> {
    let mut child = journalctl(unit, service, lines)
        .arg("--follow")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(JournalError::Spawn)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| JournalError::Failed("journalctl has no standard output".into()))?;
    let (entries, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        let _journalctl = child;
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let entry = serde_json::from_str::<Value>(&line).ok();
            if let Some(entry) = entry.as_ref().and_then(parse_entry)
                && entries.send(entry).await.is_err()
            {
                return;
            }
        }
    });
    Ok(receiver)
}

/// An entry of `journalctl -o json`: a binary MESSAGE comes as an array of bytes.
fn parse_entry(entry: &Value) -> Option<LogEntry> {
    let micros: u64 = entry["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    let message = match &entry["MESSAGE"] {
        Value::String(text) => text.clone(),
        Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    Some(LogEntry {
        time: humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(micros))
            .to_string(),
        service: entry["SYSLOG_IDENTIFIER"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_time_service_and_message() {
        let entry = serde_json::json!({
            "__REALTIME_TIMESTAMP": "1764446400123456",
            "SYSLOG_IDENTIFIER": "db",
            "MESSAGE": "ready for connections",
        });
        assert_eq!(
            parse_entry(&entry),
            Some(LogEntry {
                time: "2025-11-29T20:00:00.123456Z".into(),
                service: "db".into(),
                message: "ready for connections".into(),
            })
        );
        let binary = serde_json::json!({
            "__REALTIME_TIMESTAMP": "0",
            "SYSLOG_IDENTIFIER": "web",
            "MESSAGE": [104, 105, 255],
        });
        assert_eq!(parse_entry(&binary).unwrap().message, "hi\u{fffd}");
        assert_eq!(parse_entry(&serde_json::json!({"MESSAGE": "x"})), None);
    }
}

//! Containers' output: FIFOs the shim writes, relayed line by line to the journal.

use super::SupervisorError;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;

/// The longest line sent as one journal entry; a longer one is sent in pieces, so a
/// container that never writes a newline cannot make the supervisor buffer without end.
const MAX_LINE: usize = 16 * 1024;
/// What a relay reads at once: each line is a journal call anyway, and tokio's 8 KiB
/// default, two per container, stayed allocated in every app's supervisor.
const READ_BUFFER: usize = 1024;

/// A FIFO for a container's output. `fresh` replaces one left from an earlier run;
/// otherwise an existing one is kept, since a running container writes to it.
pub(super) fn make_fifo(path: &Path, fresh: bool) -> Result<(), SupervisorError> {
    let io_error = |source| SupervisorError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if !fresh {
            return Ok(());
        }
        std::fs::remove_file(path).map_err(io_error)?;
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|errno| io_error(errno.into()))
}

/// Relays a service's stdout and stderr FIFOs. They are opened read-write: the relay
/// then never sees an end of file while no writer has them open, and they survive
/// containerd restarts (the shim keeps writing).
pub(super) fn relay(service: &str, out: &Path, err: &Path) -> Result<(), SupervisorError> {
    for (path, priority) in [
        (out, libsystemd::logging::Priority::Info),
        (err, libsystemd::logging::Priority::Warning),
    ] {
        let receiver = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path)
            .map_err(|source| SupervisorError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        tokio::spawn(relay_lines(service.to_string(), receiver, priority));
    }
    Ok(())
}

/// Each line a container writes, to the journal with the service as its identifier
/// (or to stdout, tagged, when there is no journal).
async fn relay_lines(
    service: String,
    receiver: pipe::Receiver,
    priority: libsystemd::logging::Priority,
) {
    let journal = libsystemd::logging::connected_to_journal();
    let mut reader = BufReader::with_capacity(READ_BUFFER, receiver);
    let mut line = Vec::new();
    while next_piece(&mut reader, &mut line).await {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let sent = journal
            && libsystemd::logging::journal_send(
                priority,
                text,
                [
                    ("SYSLOG_IDENTIFIER", service.as_str()),
                    ("APPUNIT_SERVICE", service.as_str()),
                ]
                .into_iter(),
            )
            .is_ok();
        if !sent {
            println!("{service}: {text}");
        }
    }
}

/// The next line into `line`, or its next `MAX_LINE` bytes; false at the end.
async fn next_piece<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, line: &mut Vec<u8>) -> bool {
    line.clear();
    let read = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', line)
        .await;
    matches!(read, Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_come_in_pieces() {
        let mut input = vec![b'a'; 2 * MAX_LINE + 100];
        input.extend_from_slice(b"\nshort\nlast");
        let mut reader = BufReader::new(input.as_slice());
        let mut line = Vec::new();
        let mut pieces = Vec::new();
        while next_piece(&mut reader, &mut line).await {
            pieces.push(line.clone());
        }
        let lengths: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 101, 6, 4]);
        assert_eq!(pieces[3], b"short\n");
        assert_eq!(pieces[4], b"last");
    }
}

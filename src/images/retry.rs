//! Transient registry failures (429, 408, 5xx, resets, timeouts) are tried again with
//! bounded exponential backoff; the cause shows in the pull's progress meanwhile.

use super::progress::{Progress, RetryNote};
use std::time::{Duration, SystemTime};

/// Attempts of one request, the first included.
pub const ATTEMPTS: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// No single wait is longer, whatever a `Retry-After` asks.
const LONGEST_WAIT: Duration = Duration::from_secs(20);
/// All waits of one request together: past this the request fails.
const TOTAL_WAIT: Duration = Duration::from_secs(60);

/// How long to wait before attempt `attempt + 1` (`attempt` counts from 1), or None
/// when the retries are spent.
pub fn wait_before_next(
    attempt: u32,
    waited: Duration,
    hint: Option<Duration>,
) -> Option<Duration> {
    if attempt >= ATTEMPTS {
        return None;
    }
    let exponential = FIRST_WAIT.saturating_mul(1 << (attempt - 1).min(16));
    let wait = hint.unwrap_or(exponential).min(LONGEST_WAIT);
    (waited + wait <= TOTAL_WAIT).then_some(wait)
}

/// `Retry-After`: delay-seconds or an HTTP-date (a past date means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

/// A transient failure: its cause, and the wait the registry asked for.
#[derive(Debug)]
pub struct Transient {
    pub cause: String,
    pub retry_after: Option<Duration>,
}

/// The retries of one request: counts attempts, waits, and shows the cause meanwhile.
pub struct Retries<'a> {
    progress: &'a Progress,
    attempt: u32,
    waited: Duration,
    note: Option<RetryNote<'a>>,
}

impl<'a> Retries<'a> {
    pub fn new(progress: &'a Progress) -> Retries<'a> {
        Retries {
            progress,
            attempt: 1,
            waited: Duration::ZERO,
            note: None,
        }
    }

    /// Waits before the next attempt; when the retries are spent, the last cause with
    /// how many attempts were made.
    pub async fn wait(&mut self, failure: Transient) -> Result<(), String> {
        let Some(wait) = wait_before_next(self.attempt, self.waited, failure.retry_after) else {
            return Err(format!(
                "{} (gave up after {} attempts)",
                failure.cause, self.attempt
            ));
        };
        self.attempt += 1;
        self.waited += wait;
        let text = format!("{}, attempt {} of {ATTEMPTS}", failure.cause, self.attempt);
        tracing::warn!(retry = %text, "registry request failed; trying again");
        match &self.note {
            Some(note) => note.set(text),
            None => self.note = Some(self.progress.retrying(text)),
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let mut waits = Vec::new();
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        while let Some(wait) = wait_before_next(attempt, waited, None) {
            waits.push(wait);
            waited += wait;
            attempt += 1;
        }
        assert_eq!(attempt, ATTEMPTS);
        assert_eq!(waits[0], FIRST_WAIT);
        assert!(waits.windows(2).all(|w| w[1] == w[0] * 2));
        assert!(waited <= TOTAL_WAIT);
        // A huge Retry-After is capped, and the total still ends the retries.
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            wait_before_next(1, Duration::ZERO, hour),
            Some(LONGEST_WAIT)
        );
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        while let Some(wait) = wait_before_next(attempt, waited, hour) {
            waited += wait;
            attempt += 1;
        }
        assert!(
            waited <= TOTAL_WAIT && attempt <= ATTEMPTS,
            "{waited:?} {attempt}"
        );
        assert_eq!(wait_before_next(ATTEMPTS, Duration::ZERO, None), None);
    }
}

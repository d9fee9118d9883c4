//! When to try again: the retry schedule, its jitter, and how far a `Retry-After` may move it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// The longest a delay may be, in the schedule or asked by a subscriber's `Retry-After`: a day.
/// A retry waits out of the queue's in-flight pool (re-sent with delays, hop by hop), so no
/// queue limit bounds it; this bounds how long a message can be held back on someone's word.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Each delay moves by up to this fraction either way, so retries of many messages that failed
/// together do not all hit the subscriber in the same second.
pub const JITTER: f64 = 0.2;

/// Delays between attempts. The first attempt is immediate; after failed attempt `n` the next
/// one waits `delays[n - 1]`; after the last delay's attempt fails the message is dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the retry schedule is empty")]
    Empty,
    #[error("`{0}` is not a delay like 5s, 5m or 2h")]
    BadDelay(String),
    #[error("`{0}` is longer than the 24h a retry may wait")]
    TooLong(String),
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    RetryIn(Duration),
    GiveUp,
}

impl Default for RetrySchedule {
    /// The Svix schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        let secs = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        Self {
            delays: secs.into_iter().map(Duration::from_secs).collect(),
        }
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(long) = delays.iter().find(|d| **d > MAX_DELAY) {
            return Err(ScheduleError::TooLong(human_duration(*long)));
        }
        Ok(Self { delays })
    }

    /// How many attempts a message gets in all: the immediate one plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The next step after attempt `attempt` (1-based, carried in the message) failed.
    /// `random_unit` in [0, 1) draws the jitter. `retry_after` is the subscriber's wish (a 429's
    /// or 503's `Retry-After`): a floor, capped at [`MAX_DELAY`], so it can slow the schedule
    /// down but never rush it.
    pub fn next_step(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        random_unit: f64,
    ) -> NextStep {
        let Some(base) = attempt
            .checked_sub(1)
            .and_then(|i| self.delays.get(i as usize))
        else {
            return NextStep::GiveUp;
        };
        let factor = 1.0 - JITTER + 2.0 * JITTER * random_unit.clamp(0.0, 1.0);
        let jittered = base.mul_f64(factor);
        let floor = retry_after.unwrap_or_default().min(MAX_DELAY);
        NextStep::RetryIn(jittered.max(floor).min(MAX_DELAY))
    }

    /// [`Self::next_step`] with jitter from the OS random source (no jitter if it fails).
    pub fn next_step_jittered(&self, attempt: u32, retry_after: Option<Duration>) -> NextStep {
        let mut bytes = [0u8; 4];
        let unit = match getrandom::fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
            Err(_) => 0.5,
        };
        self.next_step(attempt, retry_after, unit)
    }
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    /// Parses `5s,5m,30m,2h,5h,10h,10h`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                parse_duration(part).ok_or_else(|| ScheduleError::BadDelay(part.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(delays)
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| human_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// `90s`, `5m`, `2h`, `5d` (or `1h30m` style pieces summed); `None` for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let value: u64 = digits.parse().ok()?;
        total = value.checked_mul(unit).and_then(|v| total.checked_add(v))?;
        digits.clear();
    }
    if !digits.is_empty() || text.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// A duration in the schedule's own notation, for log lines a person reads.
/// Whole units stay whole (`5m`, `2h`); a jittered delay keeps its precision (`1.8s`,
/// `4m47s`, `2h13m`), never rounded down to a step it is not.
pub fn human_duration(d: Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    match secs {
        0 if millis == 0 => "0s".to_owned(),
        0 => format!("{millis}ms"),
        s if s < 60 && millis == 0 => format!("{s}s"),
        s if s < 60 => format!("{:.1}s", d.as_secs_f64()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s < 3600 => format!("{}m", s / 60),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s % 60 == 0 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60),
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - now;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_with_their_precision() {
        let cases = [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1830), "1.8s"),
            (Duration::from_millis(2400), "2.4s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_millis(287_300), "4m47s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(36_000), "10h"),
            (Duration::from_secs(3630), "1h0m30s"),
            (Duration::from_secs(42_930), "11h55m30s"),
        ];
        for (duration, text) in cases {
            assert_eq!(human_duration(duration), text, "{duration:?}");
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_is_the_svix_schedule() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.to_string(), "5s,5m,30m,2h,5h,10h,10h");
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(
            "5s,5m,30m,2h,5h,10h,10h".parse::<RetrySchedule>().unwrap(),
            schedule
        );
    }

    #[test]
    fn delay_follows_the_attempt_number_until_the_schedule_runs_out() {
        let schedule: RetrySchedule = "1s,2m,3h".parse().unwrap();
        assert_eq!(schedule.next_step(1, None, 0.5), NextStep::RetryIn(secs(1)));
        assert_eq!(
            schedule.next_step(2, None, 0.5),
            NextStep::RetryIn(secs(120))
        );
        assert_eq!(
            schedule.next_step(3, None, 0.5),
            NextStep::RetryIn(secs(3 * 3600))
        );
        assert_eq!(schedule.next_step(4, None, 0.5), NextStep::GiveUp);
        assert_eq!(schedule.next_step(99, None, 0.5), NextStep::GiveUp);
        assert_eq!(schedule.next_step(0, None, 0.5), NextStep::GiveUp);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule: RetrySchedule = "100s".parse().unwrap();
        assert_eq!(
            schedule.next_step(1, None, 0.0),
            NextStep::RetryIn(secs(80))
        );
        assert_eq!(
            schedule.next_step(1, None, 1.0),
            NextStep::RetryIn(secs(120))
        );
        for _ in 0..200 {
            let NextStep::RetryIn(d) = schedule.next_step_jittered(1, None) else {
                panic!("expected a retry")
            };
            assert!(d >= secs(80) && d <= secs(120), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_a_day() {
        let schedule: RetrySchedule = "100s".parse().unwrap();
        assert_eq!(
            schedule.next_step(1, Some(secs(150)), 0.5),
            NextStep::RetryIn(secs(150))
        );
        assert_eq!(
            schedule.next_step(1, Some(secs(1)), 0.5),
            NextStep::RetryIn(secs(100)),
            "never sooner than the schedule"
        );
        assert_eq!(
            schedule.next_step(1, Some(secs(10_000)), 0.5),
            NextStep::RetryIn(secs(10_000)),
            "not clamped to twice the delay"
        );
        assert_eq!(
            schedule.next_step(1, Some(secs(3 * 86_400)), 0.5),
            NextStep::RetryIn(MAX_DELAY)
        );
        let quick: RetrySchedule = "1s".parse().unwrap();
        assert_eq!(
            quick.next_step(1, Some(secs(20)), 1.0),
            NextStep::RetryIn(secs(20)),
            "a 429 with Retry-After: 20 waits 20 s"
        );
    }

    #[test]
    fn schedule_delays_are_at_most_a_day() {
        assert!("24h".parse::<RetrySchedule>().is_ok());
        assert!(matches!(
            "24h1s".parse::<RetrySchedule>(),
            Err(ScheduleError::TooLong(_))
        ));
    }

    #[test]
    fn malformed_schedules_are_refused() {
        for text in ["", ",", "5", "5x", "s", "-5s", "5s,,oops"] {
            assert!(text.parse::<RetrySchedule>().is_err(), "{text:?}");
        }
        assert_eq!(
            "1h30m".parse::<RetrySchedule>().unwrap().to_string(),
            "1h30m"
        );
        assert_eq!(
            "0s,5m".parse::<RetrySchedule>().unwrap().to_string(),
            "0s,5m"
        );
        assert_eq!("0s,1s".parse::<RetrySchedule>().unwrap().max_attempts(), 3);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = OffsetDateTime::parse("Sun, 06 Nov 1994 08:49:37 GMT", &Rfc2822).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

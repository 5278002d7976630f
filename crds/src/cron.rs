//! Cron schedules as Kubernetes CronJobs read them (five fields, or `@hourly`-style
//! descriptors), so a Connector or SpeechJob runs at the same minutes in standalone as in a
//! cluster. One parser serves admission (the offline validator, both modes), the operator's
//! check before it renders a CronJob, and standalone's run-time scheduler, so a schedule that
//! is accepted is one that runs. Pure: parsing and "the next minute after" only.

use jiff::ToSpan as _;
use jiff::civil::{Date, DateTime, Time};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month or day of week was `*`: then both must match, otherwise either (as cron).
    day_star: bool,
    weekday_star: bool,
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {schedule:?}: {reason}")]
pub struct CronError {
    schedule: String,
    reason: String,
}

impl CronError {
    /// What is wrong, without the schedule (for messages that name the field instead).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
// 7 is Sunday too, as in cron.
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A search never needs more than the longest gap between two matches (29 February, 8 years).
const SEARCH_YEARS: i16 = 9;

impl Cron {
    /// Parse a schedule; a schedule that parses but names no date that exists (30 February) is
    /// refused too, as it would never run.
    pub fn parse(schedule: &str) -> Result<Self, CronError> {
        let err = |reason: String| CronError {
            schedule: schedule.to_owned(),
            reason,
        };
        let expanded = match schedule.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(err(format!("unknown descriptor {s}"))),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };
        let mut weekdays = bits(dow, &WEEKDAY).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Self {
            minutes: bits(m, &MINUTE).map_err(err)?,
            hours: bits(h, &HOUR).map_err(err)?,
            days: bits(dom, &DAY).map_err(err)?,
            months: bits(mon, &MONTH).map_err(err)?,
            weekdays,
            day_star: dom.starts_with('*'),
            weekday_star: dow.starts_with('*'),
        };
        // Any start works: the search spans a whole leap cycle.
        if cron
            .next_after(Date::constant(2000, 1, 1).to_datetime(Time::midnight()))
            .is_none()
        {
            return Err(err(
                "it names no date that exists, so it would never run".into()
            ));
        }
        Ok(cron)
    }

    /// The first minute strictly after `after` (seconds ignored) that the schedule names.
    pub fn next_after(&self, after: DateTime) -> Option<DateTime> {
        let start = after
            .date()
            .to_datetime(Time::new(after.hour(), after.minute(), 0, 0).ok()?);
        let mut t = start.checked_add(1.minute()).ok()?;
        let limit = after.date().year().saturating_add(SEARCH_YEARS);
        while t.year() <= limit {
            if !has(self.months, t.month()) {
                let first = Date::new(t.year(), t.month(), 1).ok()?;
                t = first
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Time::midnight());
            } else if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Time::midnight());
            } else if !has(self.hours, t.hour()) {
                let hour = t.date().to_datetime(Time::new(t.hour(), 0, 0, 0).ok()?);
                t = hour.checked_add(1.hour()).ok()?;
            } else if !has(self.minutes, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
            } else {
                return Some(t);
            }
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days, date.day());
        let dow = has(self.weekdays, date.weekday().to_sunday_zero_offset());
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

fn has(set: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| set & (1 << v) != 0)
}

/// The values one field allows, as bits: `*`, `N`, `A-B`, each with an optional `/STEP`,
/// separated by commas; months and weekdays also by their English three-letter names.
fn bits(field: &str, f: &Field) -> Result<u64, String> {
    let mut out = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{}: step {s:?} is not a positive number", f.name)
                    })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, f)?, value(b, f)?)
        } else {
            let v = value(range, f)?;
            // `N/STEP` means from N to the end, as in cron.
            (v, if step > 1 { f.max } else { v })
        };
        if lo > hi {
            return Err(format!("{}: range {range:?} runs backwards", f.name));
        }
        for v in (lo..=hi).step_by(step as usize) {
            out |= 1 << v;
        }
    }
    Ok(out)
}

fn value(s: &str, f: &Field) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let v = match f.names.iter().position(|n| *n == lower) {
        Some(i) => u32::try_from(i).unwrap_or(0) + f.min,
        None => s
            .parse()
            .map_err(|_| format!("{}: {s:?} is not a number", f.name))?,
    };
    if !(f.min..=f.max).contains(&v) {
        return Err(format!("{}: {v} is outside {}-{}", f.name, f.min, f.max));
    }
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn next(schedule: &str, after: DateTime) -> DateTime {
        Cron::parse(schedule).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn every_minute_is_the_next_whole_minute() {
        let t = date(2026, 11, 24).at(10, 15, 42, 0);
        assert_eq!(next("* * * * *", t), date(2026, 11, 24).at(10, 16, 0, 0));
    }

    #[test]
    fn default_connector_schedule_runs_every_five_minutes() {
        let t = date(2026, 11, 24).at(10, 15, 0, 0);
        assert_eq!(next("*/5 * * * *", t), date(2026, 11, 24).at(10, 20, 0, 0));
        assert_eq!(
            next("*/5 * * * *", date(2026, 11, 24).at(23, 57, 0, 0)),
            date(2026, 11, 25).at(0, 0, 0, 0)
        );
    }

    #[test]
    fn daily_retention_runs_next_day_once_past() {
        let before = date(2026, 12, 31).at(1, 0, 0, 0);
        let after = date(2026, 12, 31).at(2, 30, 0, 0);
        assert_eq!(
            next("30 2 * * *", before),
            date(2026, 12, 31).at(2, 30, 0, 0)
        );
        assert_eq!(next("30 2 * * *", after), date(2027, 1, 1).at(2, 30, 0, 0));
    }

    #[test]
    fn names_ranges_lists_and_steps() {
        // 2026-11-24 is a Tuesday.
        let t = date(2026, 11, 24).at(18, 0, 0, 0);
        assert_eq!(
            next("0 9-17/4 * * mon-fri", t),
            date(2026, 11, 25).at(9, 0, 0, 0)
        );
        assert_eq!(
            next("15,45 8 * * sat,SUN", t),
            date(2026, 11, 28).at(8, 15, 0, 0)
        );
        assert_eq!(next("0 0 * * 7", t), date(2026, 11, 29).at(0, 0, 0, 0));
        assert_eq!(next("0 0 1 jan *", t), date(2027, 1, 1).at(0, 0, 0, 0));
        assert_eq!(next("@hourly", t), date(2026, 11, 24).at(19, 0, 0, 0));
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 1st or any Friday: Friday the 27th comes first.
        let t = date(2026, 11, 24).at(0, 0, 0, 0);
        assert_eq!(next("0 0 1 * 5", t), date(2026, 11, 27).at(0, 0, 0, 0));
        // A star in either field means both must match; `*/1` allows every weekday: the 1st.
        assert_eq!(next("0 0 1 * */1", t), date(2026, 12, 1).at(0, 0, 0, 0));
    }

    #[test]
    fn leap_day_and_impossible_dates() {
        let t = date(2026, 3, 1).at(0, 0, 0, 0);
        assert_eq!(next("0 0 29 2 *", t), date(2028, 2, 29).at(0, 0, 0, 0));
        let e = Cron::parse("0 0 30 2 *").unwrap_err();
        assert!(e.reason().contains("never run"), "{e}");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (schedule, needle) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* * * 13 *", "month: 13 is outside 1-12"),
            ("*/0 * * * *", "step \"0\""),
            ("5-1 * * * *", "runs backwards"),
            ("* * * * funday", "\"funday\" is not a number"),
            ("@fortnightly", "unknown descriptor"),
        ] {
            let e = Cron::parse(schedule).unwrap_err().to_string();
            assert!(e.contains(needle), "{schedule}: {e}");
        }
    }
}

//! The recording rules (a RecordingProfile's `selector`) as the recorder receives them, and
//! their compiled form: regular expressions built and the time zone resolved once, at load.

use std::collections::BTreeSet;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::problem::{Invalid, Problems};

/// Longest regular expression or number list accepted, as in the reference product.
const MAX_REGEX_CHARS: usize = 2048;
const MAX_NUMBERS: usize = 128;
const MAX_WINDOWS: usize = 64;
/// Bounds the compiled program so a hostile pattern cannot exhaust the recorder's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Whose calls, which calls and when they are recorded. Field names and defaults are those of
/// the RecordingProfile's `spec.selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// Record every user of the tenant, and calls whose parties match no user.
    #[serde(default)]
    pub all_users: bool,
    /// Directory groups whose members are recorded. The members' extensions are looked up at
    /// call time, so membership changes need no new configuration.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Which kinds of calls are recorded.
    #[serde(default)]
    pub call_types: CallTypes,
    /// Filters on the remote party's number.
    #[serde(default)]
    pub numbers: NumberFilters,
    /// When calls are recorded (default 24/7, UTC).
    #[serde(default)]
    pub schedule: Schedule,
    /// How a selected call is recorded.
    #[serde(default)]
    pub mode: RecordingMode,
    /// Percentage of selected calls recorded, 1 to 100 (quality-assurance sampling).
    #[serde(default = "default_sample")]
    pub sample_percent: u8,
}

fn default_sample() -> u8 {
    100
}

fn yes() -> bool {
    true
}

/// Recording mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordingMode {
    /// Record every selected call.
    #[default]
    Always,
    /// Record selected calls paused, until a user starts the recording.
    OnDemand,
    /// Record every selected call, never sampled away; a call that cannot be recorded is failed.
    Mandatory,
}

/// Inbound/outbound switch for one class of call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directions {
    /// Calls the user receives.
    #[serde(default = "yes")]
    pub inbound: bool,
    /// Calls the user places.
    #[serde(default = "yes")]
    pub outbound: bool,
}

impl Default for Directions {
    fn default() -> Self {
        Self {
            inbound: true,
            outbound: true,
        }
    }
}

/// Which kinds of calls are recorded (all by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallTypes {
    /// Calls between users of the same organisation.
    #[serde(default)]
    pub internal: Directions,
    /// Calls with another SIP domain or trunk that is not the PSTN.
    #[serde(default)]
    pub external: Directions,
    /// Calls with the public telephone network.
    #[serde(default)]
    pub pstn: Directions,
    /// Conference and meeting calls.
    #[serde(default = "yes")]
    pub conferences: bool,
    /// Calls answered from a queue.
    #[serde(default = "yes")]
    pub queues: bool,
    /// Only calls from these queues; empty means every queue.
    #[serde(default)]
    pub queue_ids: Vec<String>,
}

impl Default for CallTypes {
    fn default() -> Self {
        Self {
            internal: Directions::default(),
            external: Directions::default(),
            pstn: Directions::default(),
            conferences: true,
            queues: true,
            queue_ids: Vec::new(),
        }
    }
}

/// Number filters for received and placed calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberFilters {
    /// Applied to the calling number of calls the user receives.
    #[serde(default)]
    pub received: NumberFilter,
    /// Applied to the called number of calls the user places.
    #[serde(default)]
    pub placed: NumberFilter,
}

/// An allow or block list of remote numbers: a call matches when the regular expression
/// matches or, failing that, when the number is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberFilter {
    /// `Block` records every call except matches; `Allow` records matches only.
    #[serde(default)]
    pub list_type: ListType,
    /// Numbers, digits only (E.164 without `+`).
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Regular expression searched in the number (anchor it with `^…$` to match whole numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Kind of number list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListType {
    /// Record only calls that match.
    Allow,
    /// Record every call except those that match.
    #[default]
    Block,
}

/// Weekly windows in an IANA time zone. No windows means always.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// IANA time zone the windows are read in, e.g. `Europe/London`.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// Windows in which calls are recorded, judged by the call's start.
    #[serde(default)]
    pub windows: Vec<Window>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            time_zone: default_tz(),
            windows: Vec::new(),
        }
    }
}

fn default_tz() -> String {
    "UTC".to_owned()
}

/// One window on one weekday, local wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Day of the week.
    pub day: Weekday,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM` or `24:00`, exclusive.
    pub end: String,
}

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<jiff::civil::Weekday> for Weekday {
    fn from(day: jiff::civil::Weekday) -> Self {
        use jiff::civil::Weekday as J;
        match day {
            J::Monday => Weekday::Monday,
            J::Tuesday => Weekday::Tuesday,
            J::Wednesday => Weekday::Wednesday,
            J::Thursday => Weekday::Thursday,
            J::Friday => Weekday::Friday,
            J::Saturday => Weekday::Saturday,
            J::Sunday => Weekday::Sunday,
        }
    }
}

/// [`Rules`] that passed validation, ready for per-call decisions. Only [`Rules::validate`]
/// (or [`crate::RecorderConfig::validate`]) builds one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordingRules {
    /// Record every user, and calls of parties that match no user.
    pub all_users: bool,
    /// Groups whose members are recorded.
    pub groups: BTreeSet<String>,
    /// Which kinds of calls are recorded.
    pub call_types: CallTypes,
    /// Filter on the calling number of received calls.
    pub received: NumberMatcher,
    /// Filter on the called number of placed calls.
    pub placed: NumberMatcher,
    /// When calls are recorded.
    pub schedule: WeeklySchedule,
    /// How a selected call is recorded.
    pub mode: RecordingMode,
    /// 1 to 100.
    pub sample_percent: u8,
}

/// A compiled [`NumberFilter`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NumberMatcher {
    /// Allow or block.
    pub list_type: ListType,
    /// Listed numbers, digits only.
    pub numbers: BTreeSet<String>,
    /// The compiled expression.
    pub regex: Option<Regex>,
}

impl NumberMatcher {
    /// Whether the filter has nothing to match with (it then lets every call through).
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.regex.is_none()
    }
}

/// A compiled [`Schedule`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WeeklySchedule {
    /// The resolved zone (offsets and DST rules).
    pub time_zone: TimeZone,
    /// Windows in minutes of the local day; empty means always.
    pub windows: Vec<MinuteWindow>,
}

/// A window as minutes since local midnight, `start_minute` inclusive, `end_minute` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MinuteWindow {
    /// Day of the week.
    pub day: Weekday,
    /// 0..=1439.
    pub start_minute: u16,
    /// 1..=1440.
    pub end_minute: u16,
}

impl Rules {
    /// Parses rules alone from YAML or JSON (a profile's `selector`).
    pub fn parse(text: &str) -> Result<Self, crate::LoadError> {
        serde_yaml::from_str(text).map_err(|e| crate::LoadError::Parse(e.to_string()))
    }

    /// Checks every rule and compiles them, or returns every problem found.
    pub fn validate(&self) -> Result<RecordingRules, Invalid> {
        let mut problems = Problems::default();
        let compiled = self.compile("", &mut problems);
        match compiled {
            Some(rules) if problems.0.is_empty() => Ok(rules),
            _ => Err(Invalid {
                problems: problems.0,
            }),
        }
    }

    /// The one place the rules are checked; `prefix` is the path of `self` (`rules.` inside a
    /// [`crate::RecorderConfig`]).
    pub(crate) fn compile(&self, prefix: &str, p: &mut Problems) -> Option<RecordingRules> {
        let at = |field: &str| format!("{prefix}{field}");
        p.check(
            self.all_users || !self.groups.is_empty(),
            at("groups"),
            "name at least one group, or set allUsers: true",
        );
        for (i, group) in self.groups.iter().enumerate() {
            p.check(
                !group.trim().is_empty() && group.len() <= 256,
                at(&format!("groups[{i}]")),
                "a group name must be 1 to 256 characters",
            );
        }
        p.check(
            (1..=100).contains(&self.sample_percent),
            at("samplePercent"),
            format!("{} is not between 1 and 100", self.sample_percent),
        );
        for (i, id) in self.call_types.queue_ids.iter().enumerate() {
            p.check(
                !id.trim().is_empty() && id.len() <= 128,
                at(&format!("callTypes.queueIds[{i}]")),
                "a queue id must be 1 to 128 characters",
            );
        }
        let received = compile_filter(&self.numbers.received, &at("numbers.received"), p);
        let placed = compile_filter(&self.numbers.placed, &at("numbers.placed"), p);
        let schedule = compile_schedule(&self.schedule, &at("schedule"), p);
        Some(RecordingRules {
            all_users: self.all_users,
            groups: self.groups.iter().cloned().collect(),
            call_types: self.call_types.clone(),
            received: received?,
            placed: placed?,
            schedule: schedule?,
            mode: self.mode,
            sample_percent: self.sample_percent,
        })
    }
}

fn compile_filter(filter: &NumberFilter, path: &str, p: &mut Problems) -> Option<NumberMatcher> {
    let mut ok = true;
    if filter.numbers.len() > MAX_NUMBERS {
        p.add(
            format!("{path}.numbers"),
            format!("at most {MAX_NUMBERS} numbers (use a regex for ranges)"),
        );
        ok = false;
    }
    for (i, n) in filter.numbers.iter().enumerate() {
        let message = if n.starts_with('+') {
            Some("write the number without `+` (digits only, e.g. 17326524689)")
        } else if n.is_empty() || n.len() > 15 || !n.bytes().all(|b| b.is_ascii_digit()) {
            Some("a number is 1 to 15 digits, nothing else")
        } else {
            None
        };
        if let Some(message) = message {
            p.add(format!("{path}.numbers[{i}]"), message);
            ok = false;
        }
    }
    let regex = match filter.regex.as_deref() {
        None => None,
        Some(raw) => {
            let at = format!("{path}.regex");
            if raw.is_empty() || raw.chars().count() > MAX_REGEX_CHARS {
                p.add(at, format!("must be 1 to {MAX_REGEX_CHARS} characters"));
                ok = false;
                None
            } else if raw.contains("\\+") {
                // Numbers are compared without `+`, so such a pattern could never match.
                p.add(
                    at,
                    "numbers are matched without `+`: remove `\\+` from the expression",
                );
                ok = false;
                None
            } else {
                match RegexBuilder::new(raw).size_limit(REGEX_SIZE_LIMIT).build() {
                    Ok(re) => Some(re),
                    Err(e) => {
                        p.add(at, format!("does not compile: {e}"));
                        ok = false;
                        None
                    }
                }
            }
        }
    };
    if filter.list_type == ListType::Allow && filter.numbers.is_empty() && filter.regex.is_none() {
        // An empty allow list would silently stop recording this direction altogether.
        p.add(
            format!("{path}.listType"),
            "an Allow list needs numbers or a regex (to record no calls of this direction, turn the call types off)",
        );
        ok = false;
    }
    ok.then(|| NumberMatcher {
        list_type: filter.list_type,
        numbers: filter.numbers.iter().cloned().collect(),
        regex,
    })
}

fn compile_schedule(schedule: &Schedule, path: &str, p: &mut Problems) -> Option<WeeklySchedule> {
    let time_zone = match TimeZoneDatabase::bundled().get(&schedule.time_zone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            p.add(
                format!("{path}.timeZone"),
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/London, America/New_York, UTC)",
                    schedule.time_zone
                ),
            );
            None
        }
    };
    let mut ok = true;
    if schedule.windows.len() > MAX_WINDOWS {
        p.add(
            format!("{path}.windows"),
            format!("at most {MAX_WINDOWS} windows"),
        );
        ok = false;
    }
    let mut windows = Vec::with_capacity(schedule.windows.len());
    for (i, w) in schedule.windows.iter().enumerate() {
        let at = format!("{path}.windows[{i}]");
        let start = parse_hhmm(&w.start).filter(|m| *m < 24 * 60);
        let end = parse_hhmm(&w.end).filter(|m| *m >= 1);
        if start.is_none() {
            p.add(format!("{at}.start"), "write HH:MM, 00:00 to 23:59");
        }
        if end.is_none() {
            p.add(format!("{at}.end"), "write HH:MM, 00:01 to 24:00");
        }
        match (start, end) {
            (Some(start), Some(end)) if start < end => windows.push(MinuteWindow {
                day: w.day,
                start_minute: start,
                end_minute: end,
            }),
            (Some(_), Some(_)) => {
                p.add(
                    format!("{at}.end"),
                    "end must be after start (a window cannot cross midnight; split it in two)",
                );
                ok = false;
            }
            _ => ok = false,
        }
    }
    let time_zone = time_zone?;
    ok.then_some(WeeklySchedule { time_zone, windows })
}

/// `HH:MM` (zero-padded, 24-hour; `24:00` allowed) as minutes since midnight.
fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 24 * 60).then_some(minutes)
}

#[cfg(test)]
mod tests {
    use super::parse_hhmm;

    #[test]
    fn clock_times_parse_strictly() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("09:30"), Some(570));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        for bad in [
            "24:01", "9:30", "09:60", "0930", "09:3a", "", "+9:30", "12:00:00",
        ] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }
}

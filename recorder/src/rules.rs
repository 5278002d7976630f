//! Whether a call is recorded: the profile's rules applied to one call's facts.
//!
//! [`decide`] is pure: the caller resolves the parties to users (from the database) and draws
//! the sampling number, so every outcome can be reproduced from its inputs.

use callvault_config::Timestamp;
use callvault_config::rules::{
    Directions, ListType, NumberMatcher, RecordingMode, RecordingRules, Weekday, WeeklySchedule,
};

/// The direction of the call, seen from the recorded user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The user receives the call; the remote party is the calling number.
    Received,
    /// The user places the call; the remote party is the called number.
    Placed,
}

/// What kind of call it is, as classified from the call source's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType<'a> {
    /// Between users of the same organisation.
    Internal,
    /// With another SIP domain or trunk that is not the PSTN.
    External,
    /// With the public telephone network.
    Pstn,
    /// A conference or meeting.
    Conference,
    /// Answered from a queue, with the queue's id when the call source gave one.
    Queue {
        /// The queue's id.
        queue_id: Option<&'a str>,
    },
}

/// A party of the call matched to a user (by extension or number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedUser {
    /// The user's name.
    pub user: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
}

/// What is known about a call when it starts.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// Received or placed, from the user's side.
    pub direction: Direction,
    /// The kind of call.
    pub call_type: CallType<'a>,
    /// Calling party number or URI user part, as signalled.
    pub calling_number: Option<&'a str>,
    /// Called party number or URI user part, as signalled.
    pub called_number: Option<&'a str>,
    /// Parties that matched a user; empty when no party matched any user.
    pub users: &'a [MatchedUser],
    /// When the call started; schedules are judged at this instant.
    pub start: Timestamp,
}

/// The outcome for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record the call.
    Record(Recording),
    /// Leave the call unrecorded, and why.
    DontRecord(Reason),
}

/// How a call is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Users the recording belongs to (the selected parties); empty when [`Self::unassigned`].
    pub users: Vec<String>,
    /// No party matched a user: listed to admins as "not assigned to users".
    pub unassigned: bool,
    /// OnDemand: capture starts paused until a user starts the recording.
    pub start_paused: bool,
    /// Mandatory: when the call cannot be recorded it is failed, not let through.
    pub mandatory: bool,
}

/// Why a call is not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Parties matched users, but none of them is selected by this profile.
    UserNotSelected,
    /// No party matched a user and the profile does not record all users.
    Unassigned,
    /// The profile does not record this kind of call (or this direction of it).
    CallTypeExcluded,
    /// The remote number is blocked, or not on the allow list.
    NumberFiltered,
    /// The call started outside the recording windows.
    OutsideSchedule,
    /// Sampling left the call out.
    NotSampled,
}

impl Reason {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserNotSelected => "user_not_selected",
            Reason::Unassigned => "unassigned",
            Reason::CallTypeExcluded => "call_type_excluded",
            Reason::NumberFiltered => "number_filtered",
            Reason::OutsideSchedule => "outside_schedule",
            Reason::NotSampled => "not_sampled",
        }
    }
}

/// Decides whether `call` is recorded under `rules`. `sample_draw` is a uniformly random
/// value in `0..100` drawn by the caller; a call is sampled in when it is below
/// `samplePercent` (larger draws count as 99, so 100 % always records).
pub fn decide(rules: &RecordingRules, call: &CallFacts<'_>, sample_draw: u8) -> Decision {
    let users: Vec<String> = call
        .users
        .iter()
        .filter(|u| rules.all_users || u.groups.iter().any(|g| rules.groups.contains(g)))
        .map(|u| u.user.clone())
        .collect();
    let unassigned = call.users.is_empty();
    if unassigned && !rules.all_users {
        return Decision::DontRecord(Reason::Unassigned);
    }
    if !unassigned && users.is_empty() {
        return Decision::DontRecord(Reason::UserNotSelected);
    }
    if !call_type_recorded(rules, call) {
        return Decision::DontRecord(Reason::CallTypeExcluded);
    }
    let (filter, remote) = match call.direction {
        Direction::Received => (&rules.received, call.calling_number),
        Direction::Placed => (&rules.placed, call.called_number),
    };
    if !number_passes(filter, remote) {
        return Decision::DontRecord(Reason::NumberFiltered);
    }
    if !in_schedule(&rules.schedule, call.start) {
        return Decision::DontRecord(Reason::OutsideSchedule);
    }
    // Mandatory means every selected call: sampling must not leave one out.
    let mandatory = rules.mode == RecordingMode::Mandatory;
    if !mandatory && sample_draw.min(99) >= rules.sample_percent {
        return Decision::DontRecord(Reason::NotSampled);
    }
    Decision::Record(Recording {
        users,
        unassigned,
        start_paused: rules.mode == RecordingMode::OnDemand,
        mandatory,
    })
}

fn call_type_recorded(rules: &RecordingRules, call: &CallFacts<'_>) -> bool {
    let types = &rules.call_types;
    let by_direction = |d: &Directions| match call.direction {
        Direction::Received => d.inbound,
        Direction::Placed => d.outbound,
    };
    match call.call_type {
        CallType::Internal => by_direction(&types.internal),
        CallType::External => by_direction(&types.external),
        CallType::Pstn => by_direction(&types.pstn),
        CallType::Conference => types.conferences,
        CallType::Queue { queue_id } => {
            types.queues
                && (types.queue_ids.is_empty()
                    || queue_id.is_some_and(|id| types.queue_ids.iter().any(|q| q == id)))
        }
    }
}

/// Number filters apply to remote parties that have a phone number (F-29); a party known only
/// by a SIP name is never filtered out.
fn number_passes(filter: &NumberMatcher, remote: Option<&str>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Some(digits) = remote.and_then(phone_digits) else {
        return true;
    };
    // The expression is checked first, then the list; either one is a match.
    let matched = filter.regex.as_ref().is_some_and(|re| re.is_match(&digits))
        || filter.numbers.contains(&digits);
    match filter.list_type {
        ListType::Allow => matched,
        ListType::Block => !matched,
    }
}

/// The digits of a signalled number, the way the lists are written: without `+`, visual
/// separators, a `tel:`/`sip:` scheme, host or parameters. `None` when it is not a number.
fn phone_digits(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = ["tel:", "sip:", "sips:"]
        .iter()
        .find_map(|scheme| {
            s.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &s[scheme.len()..])
        })
        .unwrap_or(s);
    let s = s.split(['@', ';']).next().unwrap_or_default();
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut digits = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (!digits.is_empty()).then_some(digits)
}

/// Windows are local wall-clock times in the profile's zone, so a 09:00 window opens at 09:00
/// local on both sides of a DST change.
fn in_schedule(schedule: &WeeklySchedule, start: Timestamp) -> bool {
    if schedule.windows.is_empty() {
        return true;
    }
    let local = start.to_zoned(schedule.time_zone.clone());
    let day = Weekday::from(local.weekday());
    let minute =
        u16::try_from(local.hour()).unwrap_or(0) * 60 + u16::try_from(local.minute()).unwrap_or(0);
    schedule
        .windows
        .iter()
        .any(|w| w.day == day && w.start_minute <= minute && minute < w.end_minute)
}

#[cfg(test)]
mod tests {
    use super::phone_digits;

    #[test]
    fn signalled_numbers_reduce_to_list_digits() {
        assert_eq!(
            phone_digits("+1 (732) 652-4689").as_deref(),
            Some("17326524689")
        );
        assert_eq!(
            phone_digits("tel:+447700900123").as_deref(),
            Some("447700900123")
        );
        assert_eq!(
            phone_digits("sip:2001@pbx.example;user=phone").as_deref(),
            Some("2001")
        );
        assert_eq!(phone_digits("sip:alice@example.com"), None);
        assert_eq!(phone_digits("+"), None);
        assert_eq!(phone_digits(""), None);
        assert_eq!(phone_digits("tél:1"), None);
    }
}

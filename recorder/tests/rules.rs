//! Which calls a profile records: each rule with calls that must and must not be recorded.

use callvault_config::Timestamp;
use callvault_config::rules::{RecordingRules, Rules};
use callvault_recorder::rules::{
    CallFacts, CallType, Decision, Direction, MatchedUser, Reason, decide,
};

fn rules(yaml: &str) -> RecordingRules {
    Rules::parse(yaml)
        .expect("rules parse")
        .validate()
        .expect("rules are valid")
}

fn at(instant: &str) -> Timestamp {
    instant.parse().expect("timestamp")
}

fn trader() -> Vec<MatchedUser> {
    vec![MatchedUser {
        user: "alice".into(),
        groups: vec!["traders".into()],
    }]
}

/// A PSTN call alice receives from +44 20 7946 0000 on a Wednesday noon UTC.
fn call(users: &[MatchedUser]) -> CallFacts<'_> {
    CallFacts {
        direction: Direction::Received,
        call_type: CallType::Pstn,
        calling_number: Some("+442079460000"),
        called_number: Some("2001"),
        users,
        start: at("2025-06-11T12:00:00Z"),
    }
}

fn recorded(d: &Decision) -> bool {
    matches!(d, Decision::Record(_))
}

const TRADERS: &str = "groups: [traders]\n";

#[test]
fn members_of_the_profile_groups_are_recorded_others_are_not() {
    let r = rules(TRADERS);
    let users = trader();
    match decide(&r, &call(&users), 0) {
        Decision::Record(rec) => {
            assert_eq!(rec.users, ["alice"]);
            assert!(!rec.unassigned && !rec.start_paused && !rec.mandatory);
        }
        other => panic!("not recorded: {other:?}"),
    }
    let sales = vec![MatchedUser {
        user: "bob".into(),
        groups: vec!["sales".into()],
    }];
    assert_eq!(
        decide(&r, &call(&sales), 0),
        Decision::DontRecord(Reason::UserNotSelected)
    );
    // Only the selected party owns the recording of a call between both.
    let both = [sales[0].clone(), users[0].clone()];
    let Decision::Record(rec) = decide(&r, &call(&both), 0) else {
        panic!("not recorded");
    };
    assert_eq!(rec.users, ["alice"]);
}

#[test]
fn calls_of_parties_matching_no_user_are_recorded_unassigned_only_with_all_users() {
    let no_users: [MatchedUser; 0] = [];
    assert_eq!(
        decide(&rules(TRADERS), &call(&no_users), 0),
        Decision::DontRecord(Reason::Unassigned)
    );
    let Decision::Record(rec) = decide(&rules("allUsers: true"), &call(&no_users), 0) else {
        panic!("allUsers must record unassigned calls");
    };
    assert!(rec.unassigned);
    assert!(rec.users.is_empty());
    // The profile's other rules still apply to them.
    let no_pstn = "allUsers: true\ncallTypes: { pstn: { inbound: false } }";
    assert_eq!(
        decide(&rules(no_pstn), &call(&no_users), 0),
        Decision::DontRecord(Reason::CallTypeExcluded)
    );
}

#[test]
fn call_types_and_directions_are_honoured() {
    let users = trader();
    let r = rules(
        "groups: [traders]\ncallTypes: { pstn: { inbound: false }, internal: { outbound: false }, conferences: false }",
    );
    let mut c = call(&users);
    assert!(!recorded(&decide(&r, &c, 0)), "inbound PSTN is off");
    c.direction = Direction::Placed;
    assert!(recorded(&decide(&r, &c, 0)), "outbound PSTN is on");
    c.call_type = CallType::Internal;
    assert!(!recorded(&decide(&r, &c, 0)), "outbound internal is off");
    c.direction = Direction::Received;
    assert!(recorded(&decide(&r, &c, 0)), "inbound internal is on");
    c.call_type = CallType::External;
    assert!(recorded(&decide(&r, &c, 0)), "external stays on");
    c.call_type = CallType::Conference;
    assert_eq!(
        decide(&r, &c, 0),
        Decision::DontRecord(Reason::CallTypeExcluded)
    );
}

#[test]
fn queue_calls_can_be_limited_to_listed_queues() {
    let users = trader();
    let r = rules("groups: [traders]\ncallTypes: { queueIds: [fx-desk, rates] }");
    let mut c = call(&users);
    c.call_type = CallType::Queue {
        queue_id: Some("rates"),
    };
    assert!(recorded(&decide(&r, &c, 0)));
    c.call_type = CallType::Queue {
        queue_id: Some("helpdesk"),
    };
    assert!(!recorded(&decide(&r, &c, 0)));
    c.call_type = CallType::Queue { queue_id: None };
    assert!(
        !recorded(&decide(&r, &c, 0)),
        "unknown queue is not a listed one"
    );
    let off = rules("groups: [traders]\ncallTypes: { queues: false }");
    c.call_type = CallType::Queue {
        queue_id: Some("rates"),
    };
    assert!(!recorded(&decide(&off, &c, 0)));
}

#[test]
fn received_calls_filter_on_the_calling_number_placed_calls_on_the_called_number() {
    let users = trader();
    let r = rules(
        "groups: [traders]\nnumbers:\n  received: { listType: Block, numbers: ['442079460000'] }\n  placed: { listType: Allow, numbers: ['17326524689'] }",
    );
    let mut c = call(&users);
    // Signalled with `+`; the list is written without it.
    assert_eq!(
        decide(&r, &c, 0),
        Decision::DontRecord(Reason::NumberFiltered)
    );
    c.calling_number = Some("+442079460001");
    assert!(recorded(&decide(&r, &c, 0)));

    c.direction = Direction::Placed;
    c.calling_number = Some("2001");
    c.called_number = Some("tel:+1-732-652-4689");
    assert!(recorded(&decide(&r, &c, 0)), "allowed called number");
    c.called_number = Some("17326524690");
    assert_eq!(
        decide(&r, &c, 0),
        Decision::DontRecord(Reason::NumberFiltered)
    );
    // The blocked number as the *called* number of a placed call is not filtered by
    // the received-calls list.
    c.called_number = Some("442079460000");
    assert_eq!(
        decide(&r, &c, 0),
        Decision::DontRecord(Reason::NumberFiltered)
    );
}

#[test]
fn regular_expressions_select_number_ranges() {
    let users = trader();
    let allow = rules(
        "groups: [traders]\nnumbers: { placed: { listType: Allow, regex: '^1?(732|609)[0-9]*$', numbers: ['442079460000'] } }",
    );
    let mut c = call(&users);
    c.direction = Direction::Placed;
    for (number, expected) in [
        ("+17325550100", true),
        ("6095550100", true),
        ("+12125550100", false),
        ("442079460000", true), // not matched by the regex, but listed
        ("73", false),
    ] {
        c.called_number = Some(number);
        assert_eq!(recorded(&decide(&allow, &c, 0)), expected, "{number}");
    }
    let block = rules("groups: [traders]\nnumbers: { received: { regex: '^44' } }");
    let mut c = call(&users);
    assert!(!recorded(&decide(&block, &c, 0)), "UK caller blocked");
    c.calling_number = Some("+33140000000");
    assert!(recorded(&decide(&block, &c, 0)), "French caller recorded");
}

#[test]
fn parties_without_a_phone_number_are_not_number_filtered() {
    let users = trader();
    let r = rules(
        "groups: [traders]\nnumbers: { received: { listType: Allow, numbers: ['17326524689'] } }",
    );
    let mut c = call(&users);
    c.call_type = CallType::External;
    c.calling_number = Some("sip:partner@bank.example");
    assert!(recorded(&decide(&r, &c, 0)));
    c.calling_number = None;
    assert!(recorded(&decide(&r, &c, 0)));
}

const LONDON_SUNDAY_9_TO_17: &str = "groups: [traders]\nschedule:\n  timeZone: Europe/London\n  windows:\n    - { day: Sunday, start: '09:00', end: '17:00' }\n";

#[test]
fn windows_open_and_close_on_the_boundary_minute() {
    let users = trader();
    let r = rules(LONDON_SUNDAY_9_TO_17);
    let mut c = call(&users);
    // 2025-01-12 is a Sunday in winter: London is on GMT (UTC+0).
    for (instant, expected) in [
        ("2025-01-12T08:59:59Z", false),
        ("2025-01-12T09:00:00Z", true),
        ("2025-01-12T16:59:59Z", true),
        ("2025-01-12T17:00:00Z", false),
        ("2025-01-13T10:00:00Z", false), // Monday
    ] {
        c.start = at(instant);
        let want = if expected {
            recorded
        } else {
            |d: &Decision| *d == Decision::DontRecord(Reason::OutsideSchedule)
        };
        assert!(want(&decide(&r, &c, 0)), "{instant}");
    }
}

#[test]
fn windows_follow_local_time_across_the_dst_changes() {
    let users = trader();
    let r = rules(LONDON_SUNDAY_9_TO_17);
    let mut c = call(&users);
    // 2025-03-30: clocks go forward at 01:00 UTC; from then London is UTC+1.
    for (instant, expected) in [
        ("2025-03-30T07:59:00Z", false), // 08:59 BST
        ("2025-03-30T08:00:00Z", true),  // 09:00 BST (a UTC reading would say 08:00)
        ("2025-03-30T15:59:00Z", true),  // 16:59 BST
        ("2025-03-30T16:00:00Z", false), // 17:00 BST (a UTC reading would say 16:00)
        // 2025-10-26: clocks go back at 01:00 UTC; the afternoon is GMT again.
        ("2025-10-26T08:59:00Z", false),
        ("2025-10-26T09:00:00Z", true),
        ("2025-10-26T16:30:00Z", true),
        ("2025-10-26T17:00:00Z", false),
    ] {
        c.start = at(instant);
        assert_eq!(recorded(&decide(&r, &c, 0)), expected, "{instant}");
    }
}

#[test]
fn the_weekday_is_the_local_one() {
    let users = trader();
    // Saturday 23:30 UTC is already Sunday morning in Sydney.
    let r = rules(
        "groups: [traders]\nschedule:\n  timeZone: Australia/Sydney\n  windows:\n    - { day: Sunday, start: '00:00', end: '24:00' }\n",
    );
    let mut c = call(&users);
    c.start = at("2025-06-14T23:30:00Z");
    assert!(recorded(&decide(&r, &c, 0)));
    c.start = at("2025-06-14T12:00:00Z");
    assert!(!recorded(&decide(&r, &c, 0)));
}

#[test]
fn sampling_records_the_configured_share() {
    let users = trader();
    let r = rules("groups: [traders]\nsamplePercent: 25");
    let c = call(&users);
    let kept = (0..100u8)
        .filter(|draw| recorded(&decide(&r, &c, *draw)))
        .count();
    assert_eq!(kept, 25);
    assert_eq!(decide(&r, &c, 25), Decision::DontRecord(Reason::NotSampled));
    // 100 % records every call, whatever the draw.
    let all = rules(TRADERS);
    assert!(recorded(&decide(&all, &c, 99)));
    assert!(recorded(&decide(&all, &c, 255)));
}

#[test]
fn mandatory_records_every_selected_call_and_on_demand_starts_paused() {
    let users = trader();
    let c = call(&users);
    let mandatory = rules("groups: [traders]\nmode: Mandatory\nsamplePercent: 10");
    let Decision::Record(rec) = decide(&mandatory, &c, 99) else {
        panic!("mandatory must not be sampled away");
    };
    assert!(rec.mandatory && !rec.start_paused);
    // Mandatory does not widen the selection: a user outside the groups is still not recorded.
    let other = vec![MatchedUser {
        user: "bob".into(),
        groups: vec![],
    }];
    assert!(!recorded(&decide(&mandatory, &call(&other), 0)));

    let on_demand = rules("groups: [traders]\nmode: OnDemand");
    let Decision::Record(rec) = decide(&on_demand, &c, 0) else {
        panic!("on-demand calls are captured, paused");
    };
    assert!(rec.start_paused && !rec.mandatory);
}

//! Loading and validating the recorder configuration the operator renders.

use callvault_config::{Advertise, ChannelLayout, RecorderConfig, SipTransport};

const MINIMAL: &str = r#"
tenant: bank-emea
profile: traders
storageTarget: vault
storage:
  type: filesystem
  path: /recordings
encryption:
  publicKeyPath: /etc/callvault/key/public.pem
  keyId: 3f0c9a6e1b2d4c5f8a7e6d5c4b3a29181716151413121110f0e0d0c0b0a09080
databaseUrlFile: /etc/callvault/db/url
rules:
  groups: [traders]
"#;

fn parse(text: &str) -> RecorderConfig {
    RecorderConfig::parse(text).expect("parses")
}

/// Replaces the line starting with `from` (after indentation) in MINIMAL.
fn with(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from}");
    MINIMAL.replacen(from, to, 1)
}

#[test]
fn defaults_are_the_recording_profile_defaults() {
    let valid = parse(MINIMAL).validate().expect("minimal config is valid");
    let c = &valid.config;
    assert_eq!(c.sip.port, 5060);
    assert_eq!(c.sip.transports, [SipTransport::Udp, SipTransport::Tcp]);
    assert_eq!(
        (
            c.sip.tcp_timeouts.message_seconds,
            c.sip.tcp_timeouts.idle_seconds,
            c.sip.tcp_timeouts.write_seconds
        ),
        (10, 120, 10)
    );
    assert_eq!(
        (c.rtp_port_range.start, c.rtp_port_range.end),
        (20000, 29999)
    );
    assert_eq!(c.sessions_per_replica, 200);
    assert!(c.fail_closed);
    assert_eq!(
        (c.media.bitrate, c.media.complexity, c.media.channels),
        (32000, 5, ChannelLayout::Stereo)
    );
    assert_eq!(c.max_duration_seconds, 18000);
    assert_eq!(c.retention_days, 365);
    assert_eq!(c.media_address.advertise, Advertise::default());
    assert_eq!(
        c.media_address.advertise.from_env.as_deref(),
        Some("POD_IP")
    );
    assert_eq!(c.media_timeout_seconds, 60);
    assert_eq!(c.options_probe_seconds, 60);
    assert_eq!(c.srtp, callvault_config::SrtpPolicy::Preferred);
    assert_eq!(c.rules.sample_percent, 100);
    assert_eq!(c.rules.schedule.time_zone, "UTC");
    assert!(valid.rules.schedule.windows.is_empty());
}

#[test]
fn json_round_trips_with_camel_case_fields() {
    let config = parse(MINIMAL);
    let json = serde_json::to_string(&config).expect("serialises");
    assert!(json.contains("\"sessionsPerReplica\":200"), "{json}");
    assert!(json.contains("\"databaseUrlFile\""), "{json}");
    assert_eq!(parse(&json), config);
}

#[test]
fn every_problem_is_reported_with_its_field_path() {
    let text = r#"
tenant: Bank_EMEA
profile: traders
sip: { port: 20002, transports: [TLS] }
rtpPortRange: { start: 20001, end: 20003 }
media: { bitrate: 1000, complexity: 11 }
retentionDays: 0
mediaTimeoutSeconds: 3601
optionsProbeSeconds: 86400
storage: { type: s3, path: /nope }
encryption: { publicKeyPath: "", keyId: "ABC" }
databaseUrlFile: /db
rules:
  samplePercent: 0
  numbers:
    received: { numbers: ["+17325550100", "12ab"], regex: "^(732" }
    placed: { listType: Allow }
  schedule:
    timeZone: Europe/Londn
    windows:
      - { day: Monday, start: "17:00", end: "09:00" }
      - { day: Tuesday, start: "9:00", end: "24:01" }
"#;
    let err = parse(text).validate().expect_err("invalid");
    for path in [
        "tenant",
        "sip.tlsDir",
        "sip.port",
        "rtpPortRange.start",
        "rtpPortRange",
        "media.bitrate",
        "media.complexity",
        "retentionDays",
        "mediaTimeoutSeconds",
        "optionsProbeSeconds",
        "storage.path",
        "encryption.publicKeyPath",
        "encryption.keyId",
        "rules.groups",
        "rules.samplePercent",
        "rules.numbers.received.numbers[0]",
        "rules.numbers.received.numbers[1]",
        "rules.numbers.received.regex",
        "rules.numbers.placed.listType",
        "rules.schedule.timeZone",
        "rules.schedule.windows[0].end",
        "rules.schedule.windows[1].start",
        "rules.schedule.windows[1].end",
    ] {
        assert!(err.has(path), "no problem at {path}: {err}");
    }
    assert!(!err.has("profile"), "{err}");
    assert!(err.to_string().contains("without `+`"), "{err}");
}

#[test]
fn time_zones_come_from_the_iana_database() {
    for (zone, ok) in [
        ("Europe/London", true),
        ("America/Argentina/Buenos_Aires", true),
        ("UTC", true),
        ("Mars/Olympus_Mons", false),
        ("", false),
        ("../../etc/passwd", false),
    ] {
        let text = with(
            "  groups: [traders]",
            &format!("  groups: [traders]\n  schedule: {{ timeZone: \"{zone}\" }}"),
        );
        let result = parse(&text).validate();
        assert_eq!(result.is_ok(), ok, "{zone}: {result:?}");
    }
}

#[test]
fn the_rtp_range_must_carry_the_sessions() {
    // 4 ports per session: 400 ports hold 100 sessions, not 101.
    let range = "rtpPortRange: { start: 30000, end: 30399 }\n";
    let fits = format!("{MINIMAL}{range}sessionsPerReplica: 100\n");
    assert!(parse(&fits).validate().is_ok());
    let too_many = format!("{MINIMAL}{range}sessionsPerReplica: 101\n");
    let err = parse(&too_many).validate().expect_err("too small");
    assert!(err.has("rtpPortRange"), "{err}");
}

#[test]
fn regexes_must_compile_and_stay_within_2048_characters() {
    let ok = with(
        "  groups: [traders]",
        "  groups: [traders]\n  numbers: { received: { regex: '^1?(732|609)[0-9]*$' } }",
    );
    assert!(parse(&ok).validate().is_ok());
    let long = format!("^{}$", "1".repeat(2048));
    let too_long = with(
        "  groups: [traders]",
        &format!("  groups: [traders]\n  numbers: {{ placed: {{ regex: '{long}' }} }}"),
    );
    let err = parse(&too_long).validate().expect_err("too long");
    assert!(err.has("rules.numbers.placed.regex"), "{err}");
}

#[test]
fn an_advertised_address_must_be_a_routable_ip() {
    let good = format!("{MINIMAL}mediaAddress: {{ advertise: {{ address: 203.0.113.7 }} }}\n");
    assert!(parse(&good).validate().is_ok());
    let bad = format!("{MINIMAL}mediaAddress: {{ advertise: {{ address: 0.0.0.0 }} }}\n");
    let err = parse(&bad).validate().expect_err("unspecified");
    assert!(err.has("mediaAddress.advertise.address"), "{err}");
}

#[test]
fn all_users_needs_no_groups() {
    let text = with("  groups: [traders]", "  allUsers: true");
    assert!(parse(&text).validate().is_ok());
}

#[test]
fn unreadable_or_malformed_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.yaml");
    assert!(RecorderConfig::load(&missing).is_err());
    let file = dir.path().join("recorder.yaml");
    std::fs::write(&file, "tenant: [unclosed").expect("write");
    assert!(RecorderConfig::load(&file).is_err());
    std::fs::write(&file, MINIMAL).expect("write");
    let valid = RecorderConfig::load(&file).expect("loads");
    assert_eq!(valid.config.profile, "traders");
}

#[test]
fn sip_tcp_timeouts_are_settings_within_bounds() {
    let text = format!(
        "{MINIMAL}sip:\n  tcpTimeouts: {{messageSeconds: 5, idleSeconds: 600, writeSeconds: 20}}\n"
    );
    let valid = parse(&text).validate().expect("valid timeouts");
    let t = valid.config.sip.tcp_timeouts;
    assert_eq!(
        (t.message_seconds, t.idle_seconds, t.write_seconds),
        (5, 600, 20)
    );
    let text = format!(
        "{MINIMAL}sip:\n  tcpTimeouts: {{messageSeconds: 0, idleSeconds: 3601, writeSeconds: 301}}\n"
    );
    let problems = parse(&text).validate().expect_err("out of bounds").problems;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sip.tcpTimeouts.messageSeconds",
            "sip.tcpTimeouts.idleSeconds",
            "sip.tcpTimeouts.writeSeconds"
        ]
    );
    assert!(
        problems[0].message.contains("0 is not within 1..=300"),
        "{problems:?}"
    );
}

#[test]
fn the_srtp_policy_is_one_of_three_named_values() {
    for (text, policy) in [
        ("Required", callvault_config::SrtpPolicy::Required),
        ("Preferred", callvault_config::SrtpPolicy::Preferred),
        ("Disabled", callvault_config::SrtpPolicy::Disabled),
    ] {
        let config = parse(&format!("{MINIMAL}srtp: {text}\n"));
        assert_eq!(config.srtp, policy);
    }
    let err = RecorderConfig::parse(&format!("{MINIMAL}srtp: required\n"))
        .expect_err("the values are case-sensitive, as the CRD's enum")
        .to_string();
    assert!(err.contains("srtp"), "{err}");
}

//! Deterministic, valid names for child objects.

/// Longest child name. Services need a DNS label (63), and a StatefulSet's name is also put,
/// with an 11-character revision suffix, into a pod label limited to 63.
const MAX_NAME: usize = 52;
const MAX_LABEL_VALUE: usize = 63;

/// `<owner>-<suffix>`, made a valid DNS label of at most 52 characters. Owner names that are
/// too long or contain `.` are shortened and given a hash of the full name, so two owners
/// never share a child and the same owner always gets the same one.
pub fn child_name(owner: &str, suffix: &str) -> String {
    let plain = format!("{owner}-{suffix}");
    if plain.len() <= MAX_NAME && is_dns_label(&plain) {
        return plain;
    }
    let hash = format!("{:08x}", fnv1a(owner.as_bytes()) as u32);
    // Room for the owner part: the limit minus "-<hash>-<suffix>".
    let room = MAX_NAME.saturating_sub(hash.len() + suffix.len() + 2);
    let head = sanitized(owner, room.saturating_sub(1));
    // Service names must start with a letter.
    if head.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("{head}-{hash}-{suffix}")
    } else {
        format!("x{head}-{hash}-{suffix}")
    }
}

/// A label value for an object name: the name itself when it fits, else shortened with a hash.
pub(crate) fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_owned();
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    let head = sanitized(name, MAX_LABEL_VALUE - hash.len() - 1);
    format!("{head}-{hash}")
}

/// Lowercase letters, digits and inner `-` only, at most `max` characters.
fn sanitized(name: &str, max: usize) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(max)
        .collect();
    mapped.trim_matches('-').to_owned()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('-')
}

/// FNV-1a: stable across releases and platforms, which is all a name suffix needs.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_readable() {
        assert_eq!(child_name("sales", "recorder"), "sales-recorder");
    }

    #[test]
    fn long_or_dotted_names_become_distinct_valid_labels() {
        let long_a = format!("{}-a", "x".repeat(200));
        let long_b = format!("{}-b", "x".repeat(200));
        for owner in [long_a.as_str(), long_b.as_str(), "emea.sales", "9lives"] {
            let name = child_name(owner, "recorder-headless");
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(is_dns_label(&name), "{name}");
            assert!(name.ends_with("-recorder-headless"), "{name}");
            assert_eq!(name, child_name(owner, "recorder-headless"));
        }
        assert_ne!(
            child_name(&long_a, "recorder"),
            child_name(&long_b, "recorder")
        );
        assert_ne!(
            child_name("emea.sales", "sip"),
            child_name("emea-sales", "sip")
        );
    }

    #[test]
    fn label_values_fit_the_label_limit() {
        assert_eq!(label_value("sales"), "sales");
        let v = label_value(&"a".repeat(253));
        assert!(v.len() <= MAX_LABEL_VALUE, "{v}");
    }
}

//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA), 8 kHz, one byte per sample.
//! Decoding uses 256-entry tables computed at compile time.

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let magnitude = ((((u & 0x0f) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        (0x84 - magnitude) as i16
    } else {
        (magnitude - 0x84) as i16
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

static ULAW: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
};

static ALAW: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
};

/// Decodes μ-law bytes, appending linear samples.
pub fn decode_ulaw(input: &[u8], out: &mut Vec<i16>) {
    out.extend(input.iter().map(|&b| ULAW[usize::from(b)]));
}

/// Decodes A-law bytes, appending linear samples.
pub fn decode_alaw(input: &[u8], out: &mut Vec<i16>) {
    out.extend(input.iter().map(|&b| ALAW[usize::from(b)]));
}

/// Encodes one linear sample to μ-law (bias 0x84, clip at 32635).
pub fn encode_ulaw(sample: i16) -> u8 {
    let mut x = i32::from(sample);
    let sign = if x < 0 { 0x80 } else { 0 };
    if x < 0 {
        x = -x;
    }
    x = x.min(32635) + 0x84;
    // Exponent: position of the highest set bit above bit 7.
    let exponent = (31 - (x >> 7).leading_zeros()) as i32;
    let mantissa = (x >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Encodes one linear sample to A-law.
pub fn encode_alaw(sample: i16) -> u8 {
    let x = i32::from(sample);
    let (mask, magnitude) = if x >= 0 {
        (0xd5u8, x)
    } else {
        (0x55u8, -x - 1)
    };
    let aval = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let segment = (31 - magnitude.leading_zeros()) as i32 - 7;
        ((segment << 4) | ((magnitude >> (segment + 3)) & 0x0f)) as u8
    };
    aval ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x7f], 0);
        assert_eq!(ULAW[0x00], -32124);
        assert_eq!(ULAW[0x80], 32124);
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xaa], 32256);
        assert_eq!(ALAW[0x2a], -32256);
        assert_eq!(encode_ulaw(0), 0xff);
        assert_eq!(encode_alaw(0), 0xd5);
    }

    #[test]
    fn round_trip_error_is_within_the_segment_step() {
        for x in (-32768i32..=32767).step_by(7) {
            let s = x as i16;
            let u = i32::from(ULAW[usize::from(encode_ulaw(s))]);
            let a = i32::from(ALAW[usize::from(encode_alaw(s))]);
            // Step size grows with magnitude: relative error stays under ~7 %.
            let bound = 16 + x.abs() / 15;
            assert!(
                (u - x.clamp(-32635, 32635)).abs() <= bound,
                "ulaw {x} -> {u}"
            );
            assert!((a - x).abs() <= bound, "alaw {x} -> {a}");
        }
    }

    #[test]
    fn every_code_decodes_and_re_encodes_to_itself() {
        for code in 0..=255u8 {
            let u = ULAW[usize::from(code)];
            // 0x7f and 0xff are both zero in μ-law; the encoder prefers 0xff.
            if code != 0x7f {
                assert_eq!(encode_ulaw(u), code, "ulaw code {code:#x}");
            }
            assert_eq!(
                encode_alaw(ALAW[usize::from(code)]),
                code,
                "alaw code {code:#x}"
            );
        }
    }
}

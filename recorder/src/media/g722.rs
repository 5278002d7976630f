//! ITU-T G.722 at 64 kbit/s (mode 1): 16 kHz audio as two ADPCM sub-bands
//! (6-bit lower band, 2-bit higher band) split by a 24-tap QMF.
//! Written from the recommendation's block descriptions; the encoder exists
//! so the recorder's tests (and a test client) can produce G.722 RTP.

/// QMF coefficients h(2i), i = 0..11; h(2i+1) = h(22-2i) by symmetry.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
const ILN: [u8; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [u8; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];

fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// Adaptive predictor of one sub-band (blocks RECONS..PREDIC of G.722).
#[derive(Debug, Clone, Default)]
struct Band {
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            det,
            ..Band::default()
        }
    }

    /// Scale factor adaptation (LOGSCL/SCALEL and LOGSCH/SCALEH).
    fn adapt_scale(&mut self, w: i32, max_nb: i32, shift_base: i32) {
        self.nb = ((self.nb * 127) >> 7) + w;
        self.nb = self.nb.clamp(0, max_nb);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift_base - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Updates the pole/zero predictor with quantised difference `d`.
    fn update(&mut self, d: i32) {
        self.d[0] = d;
        self.r[0] = sat(self.s + d);
        self.p[0] = sat(self.sz + d);

        // UPPOL2
        let sg: [i32; 3] = [self.p[0] >> 15, self.p[1] >> 15, self.p[2] >> 15];
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg[0] == sg[1] { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = (wd2 >> 7) + if sg[0] == sg[2] { 128 } else { -128 };
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1
        let wd1 = if sg[0] == sg[1] { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = sat(15360 - self.ap[2]);
        self.ap[1] = sat(wd1 + wd2).clamp(-limit, limit);

        // UPZERO
        let step = if d == 0 { 0 } else { 128 };
        let sg0 = d >> 15;
        for i in 1..7 {
            let wd2 = if (self.d[i] >> 15) == sg0 {
                step
            } else {
                -step
            };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat(wd2 + wd3);
        }

        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }

        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);

        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);

        // PREDIC
        self.s = sat(self.sp + self.sz);
    }
}

/// Lower band: 4-bit difference used for adaptation, then scale update.
fn adapt_low(band: &mut Band, ilow: u8) {
    let ril = usize::from(ilow >> 2);
    let dlowt = (band.det * QM4[ril]) >> 15;
    band.adapt_scale(WL[RL42[ril]], 18432, 8);
    band.update(dlowt);
}

/// Higher band: returns the quantised difference before adapting.
fn adapt_high(band: &mut Band, ihigh: u8) -> i32 {
    let dhigh = (band.det * QM2[usize::from(ihigh)]) >> 15;
    band.adapt_scale(WH[RH2[usize::from(ihigh)]], 22528, 10);
    band.update(dhigh);
    dhigh
}

/// G.722 decoder: one byte in, two 16 kHz samples out.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    /// Receive QMF histories, newest first: xd = rl - rh, xs = rl + rh.
    xd: [i32; 12],
    xs: [i32; 12],
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder {
            low: Band::new(32),
            high: Band::new(8),
            xd: [0; 12],
            xs: [0; 12],
        }
    }
}

impl G722Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes bytes, appending 2 samples per byte.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<i16>) {
        out.reserve(input.len() * 2);
        for &code in input {
            let ilow = code & 0x3f;
            let ihigh = code >> 6;

            let wd2 = (self.low.det * QM6[usize::from(ilow)]) >> 15;
            let rlow = (self.low.s + wd2).clamp(-16384, 16383);
            adapt_low(&mut self.low, ilow);

            let s_high = self.high.s;
            let dhigh = adapt_high(&mut self.high, ihigh);
            let rhigh = (dhigh + s_high).clamp(-16384, 16383);

            self.xd.copy_within(0..11, 1);
            self.xs.copy_within(0..11, 1);
            self.xd[0] = rlow - rhigh;
            self.xs[0] = rlow + rhigh;
            let mut first = 0;
            let mut second = 0;
            for i in 0..12 {
                first += self.xd[i] * QMF[i];
                second += self.xs[i] * QMF[11 - i];
            }
            out.push(sat(first >> 11) as i16);
            out.push(sat(second >> 11) as i16);
        }
    }
}

/// G.722 encoder: two 16 kHz samples in, one byte out.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    low: Band,
    high: Band,
    /// Transmit QMF history, newest first.
    x: [i32; 24],
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 24],
        }
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes pairs of samples; a trailing odd sample is ignored.
    pub fn encode(&mut self, input: &[i16], out: &mut Vec<u8>) {
        for pair in input.chunks_exact(2) {
            self.x.copy_within(0..22, 2);
            self.x[1] = i32::from(pair[0]);
            self.x[0] = i32::from(pair[1]);
            let mut even = 0;
            let mut odd = 0;
            for i in 0..12 {
                even += self.x[2 * i] * QMF[i];
                odd += self.x[2 * i + 1] * QMF[11 - i];
            }
            let xlow = (even + odd) >> 14;
            let xhigh = (even - odd) >> 14;

            let el = sat(xlow - self.low.s);
            let wd = if el >= 0 { el } else { -(el + 1) };
            let mut i = 1;
            while i < 30 && wd >= (Q6[i] * self.low.det) >> 12 {
                i += 1;
            }
            let ilow = if el < 0 { ILN[i] } else { ILP[i] };
            adapt_low(&mut self.low, ilow);

            let eh = sat(xhigh - self.high.s);
            let wd = if eh >= 0 { eh } else { -(eh + 1) };
            let mih = if wd >= (564 * self.high.det) >> 12 {
                2
            } else {
                1
            };
            let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
            adapt_high(&mut self.high, ihigh);

            out.push((ihigh << 6) | ilow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 16000.0).sin()) as i16
            })
            .collect()
    }

    /// Best signal-to-noise ratio over small lags (the codec delays ~1.4 ms).
    fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
        (0..40)
            .map(|lag| {
                let (mut sig, mut err) = (0.0, 0.0);
                for i in 400..reference.len() - 40 {
                    let r = f64::from(reference[i]);
                    let d = f64::from(decoded[i + lag]);
                    sig += r * r;
                    err += (r - d) * (r - d);
                }
                10.0 * (sig / err.max(1.0)).log10()
            })
            .fold(f64::MIN, f64::max)
    }

    #[test]
    fn round_trip_preserves_low_and_high_band_tones() {
        for freq in [300.0, 1000.0, 3000.0, 5500.0] {
            let input = tone(freq, 8000);
            let mut bytes = Vec::new();
            G722Encoder::new().encode(&input, &mut bytes);
            assert_eq!(bytes.len(), 4000);
            let mut out = Vec::new();
            G722Decoder::new().decode(&bytes, &mut out);
            assert_eq!(out.len(), input.len());
            let snr = snr_db(&input, &out);
            assert!(snr > 15.0, "{freq} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn silence_decodes_to_near_silence() {
        let mut bytes = Vec::new();
        G722Encoder::new().encode(&[0; 3200], &mut bytes);
        let mut out = Vec::new();
        G722Decoder::new().decode(&bytes, &mut out);
        assert!(out.iter().all(|&s| s.abs() < 64));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
        let mut out = Vec::new();
        G722Decoder::new().decode(&bytes, &mut out);
        assert_eq!(out.len(), 40_000);
    }
}

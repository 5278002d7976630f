//! Windowed-sinc resampler between the rates the recorder meets
//! (8, 16, 24, 48 kHz). Works packet by packet with a short history so that
//! each packet's output lands exactly at its own timeline position; the
//! filter delays audio by `HALF` input samples (1 ms at 8 kHz).

/// Taps on each side of the interpolation point, in units of the lower rate.
const HALF: usize = 8;

#[derive(Debug, Clone)]
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    /// Input samples each side of the centre (scaled up when decimating).
    half: usize,
    /// One kernel per output phase: `phases[phase][tap]`.
    phases: Vec<Vec<f32>>,
    /// Last `2 * half` input samples, oldest first.
    history: Vec<f32>,
    scratch: Vec<f32>,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Resampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Resampler {
        let g = gcd(in_rate, out_rate).max(1);
        let up = out_rate / g;
        let down = in_rate / g;
        // When decimating, widen the kernel and lower the cut-off to the
        // output Nyquist so nothing aliases into speech.
        let factor = (down as f64 / up as f64).max(1.0);
        let half = (HALF as f64 * factor).ceil() as usize;
        let cutoff = 0.5 / factor * 0.92;
        let taps = 2 * half;
        let phases = (0..up)
            .map(|phase| {
                let frac = phase as f64 / up as f64;
                let mut k: Vec<f64> = (0..taps)
                    .map(|t| {
                        // Tap t reads history sample (t - taps + 1) relative to the newest.
                        let x = (t as f64 - taps as f64 + 1.0) + half as f64 - frac;
                        let sinc = if x.abs() < 1e-9 {
                            2.0 * cutoff
                        } else {
                            (2.0 * std::f64::consts::PI * cutoff * x).sin()
                                / (std::f64::consts::PI * x)
                        };
                        let w = 0.5 + 0.5 * (std::f64::consts::PI * x / (half as f64 + 1.0)).cos();
                        sinc * w
                    })
                    .collect();
                let sum: f64 = k.iter().sum();
                if sum.abs() > 1e-9 {
                    k.iter_mut().for_each(|v| *v /= sum);
                }
                k.into_iter().map(|v| v as f32).collect()
            })
            .collect();
        Resampler {
            in_rate,
            out_rate,
            half,
            phases,
            history: vec![0.0; taps],
            scratch: Vec::new(),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.in_rate == self.out_rate
    }

    /// Forgets history (after a gap the past is silence anyway).
    pub fn reset(&mut self) {
        self.history.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Number of output samples for `n` input samples.
    pub fn output_len(&self, n: usize) -> usize {
        (n as u64 * u64::from(self.out_rate) / u64::from(self.in_rate)) as usize
    }

    /// Resamples one contiguous block, appending to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        let taps = 2 * self.half;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.history);
        self.scratch.extend(input.iter().map(|&s| f32::from(s)));
        let up = self.phases.len() as u64;
        let in_r = u64::from(self.in_rate);
        let out_r = u64::from(self.out_rate);
        for k in 0..self.output_len(input.len()) as u64 {
            let pos = k * in_r / out_r; // newest input sample used, relative to block start
            let phase = ((k * in_r * up / out_r) % up) as usize;
            let end = pos as usize + taps + 1; // one past the newest sample, in scratch
            let window = &self.scratch[end - taps..end];
            let acc: f32 = window
                .iter()
                .zip(&self.phases[phase])
                .map(|(x, h)| x * h)
                .sum();
            out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
        }
        let keep = self.scratch.len() - taps;
        self.history.copy_from_slice(&self.scratch[keep..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (10000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin())
                    as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_speech_band_tones_across_rates() {
        for (a, b) in [
            (8000, 16000),
            (16000, 8000),
            (48000, 16000),
            (8000, 48000),
            (16000, 48000),
        ] {
            let mut r = Resampler::new(a, b);
            let input = tone(1000.0, a, a as usize / 2);
            let mut out = Vec::new();
            // Packet by packet, 20 ms each, as the timeline does.
            for chunk in input.chunks(a as usize / 50) {
                r.process(chunk, &mut out);
            }
            assert_eq!(out.len(), b as usize / 2);
            let level = rms(&out[b as usize / 50..]);
            assert!((level / 7071.0 - 1.0).abs() < 0.05, "{a}->{b}: rms {level}");
        }
    }

    #[test]
    fn decimation_rejects_what_the_output_cannot_carry() {
        let mut r = Resampler::new(16000, 8000);
        let mut out = Vec::new();
        r.process(&tone(6000.0, 16000, 8000), &mut out);
        assert!(
            rms(&out[200..]) < 500.0,
            "6 kHz aliased: {}",
            rms(&out[200..])
        );
    }
}

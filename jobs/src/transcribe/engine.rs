//! The speech engine interface every engine implements, and what is engine-neutral about
//! their results (words with timings, the language tag each expects, word error rate).

use std::future::Future;

use serde::{Deserialize, Serialize};

/// One recognised word and when it was said, in seconds from the start of the channel. This is
/// the engine-neutral shape stored in `transcripts.words`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub w: String,
    pub start: f64,
    pub end: f64,
}

/// What one request asks of an engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// BCP 47 tag as configured (`en-US`).
    pub language: String,
    /// Words and phrases to expect, for engines that accept them.
    pub phrase_hints: Vec<String>,
}

/// An engine's transcript of one piece of audio.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineOutput {
    /// The transcript text as the engine wrote it (punctuation and case kept).
    pub text: String,
    /// Words with timings relative to the start of the piece.
    pub words: Vec<Word>,
}

/// Why an engine could not transcribe a piece of audio.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine configuration: {0}")]
    Config(String),
    #[error("whisper worker: {0}")]
    Worker(String),
    #[error("the engine did not answer within {0} s")]
    Timeout(u64),
    #[error("HTTP request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer from the engine: {0}")]
    Protocol(String),
}

/// A speech-to-text engine. Each call transcribes one mono 16 kHz piece of at most
/// [`SpeechEngine::max_seconds`]; the job cuts longer channels and joins the pieces.
pub trait SpeechEngine: Send + Sync {
    /// The engine's name as stored with each transcript (`whisper`, `openai`, `google`).
    fn name(&self) -> &'static str;
    /// Longest piece one request may carry, in seconds.
    fn max_seconds(&self) -> u32;
    /// Transcribes `samples` (mono, [`super::audio::RATE`]).
    fn transcribe(
        &self,
        samples: &[i16],
        request: &Request,
    ) -> impl Future<Output = Result<EngineOutput, EngineError>> + Send;
}

/// The primary language subtag (`en` of `en-US`): what Whisper-family engines take.
pub fn iso639(bcp47: &str) -> String {
    bcp47
        .split(['-', '_'])
        .next()
        .unwrap_or(bcp47)
        .to_ascii_lowercase()
}

/// Spreads `text`'s words over `[start, end]` in proportion to their length: word timings for
/// engines that only give segment timings (an approximation, never beyond the segment).
pub fn spread_words(text: &str, start: f64, end: f64) -> Vec<Word> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let total: usize = words.iter().map(|w| w.chars().count()).sum();
    if total == 0 || end <= start {
        return words
            .iter()
            .map(|w| Word {
                w: (*w).to_owned(),
                start,
                end: start.max(end),
            })
            .collect();
    }
    let per_char = (end - start) / total as f64;
    let mut t = start;
    words
        .iter()
        .map(|w| {
            let d = w.chars().count() as f64 * per_char;
            let word = Word {
                w: (*w).to_owned(),
                start: t,
                end: (t + d).min(end),
            };
            t += d;
            word
        })
        .collect()
}

/// Lower-cased words without punctuation, for comparing transcripts.
pub fn normalise(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hypothesis` against `reference`: (substitutions + deletions +
/// insertions) / reference words, over [`normalise`]d words. 0 for two empty texts; 1 per
/// inserted word against an empty reference.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    if r.is_empty() {
        return h.len() as f64;
    }
    // Levenshtein distance over words, one row at a time.
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_substitutions_insertions_and_deletions() {
        assert_eq!(word_error_rate("Hello, World!", "hello world"), 0.0);
        assert_eq!(word_error_rate("a b c d", "a x c d"), 0.25);
        assert_eq!(word_error_rate("a b c d", "a b d"), 0.25);
        assert_eq!(word_error_rate("a b c d", "a b c d e"), 0.25);
        assert_eq!(word_error_rate("a b", ""), 1.0);
        assert_eq!(word_error_rate("", ""), 0.0);
        assert_eq!(word_error_rate("", "x y"), 2.0);
    }

    #[test]
    fn language_tag_to_iso639() {
        assert_eq!(iso639("en-US"), "en");
        assert_eq!(iso639("DE"), "de");
        assert_eq!(iso639("zh-Hant-TW"), "zh");
    }

    #[test]
    fn spread_words_stays_inside_the_segment_in_order() {
        let w = spread_words(" Thank you, caller.", 2.0, 4.0);
        assert_eq!(
            w.iter().map(|w| w.w.as_str()).collect::<Vec<_>>(),
            ["Thank", "you,", "caller."]
        );
        assert_eq!(w[0].start, 2.0);
        assert!((w[2].end - 4.0).abs() < 1e-9);
        for pair in w.windows(2) {
            assert!(pair[0].end <= pair[1].start + 1e-9);
        }
        assert!(spread_words("", 0.0, 1.0).is_empty());
        let degenerate = spread_words("a b", 3.0, 3.0);
        assert!(degenerate.iter().all(|w| w.start == 3.0 && w.end == 3.0));
    }
}

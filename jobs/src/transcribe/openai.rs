//! The `openai` engine: any server implementing OpenAI's `POST /v1/audio/transcriptions`
//! (OpenAI itself, or a self-hosted compatible server).
//!
//! Each piece is sent as a 16 kHz mono WAV with `response_format=verbose_json` and word and
//! segment timestamp granularities. Servers that return word timings give them; servers that
//! return only segments get their words spread over each segment (see
//! [`super::engine::spread_words`]). Phrase hints go in `prompt`, which Whisper-family models
//! use to bias their vocabulary. Pieces stay under OpenAI's 25 MiB request limit.

use std::time::Duration;

use serde::Deserialize;

use super::audio::wav;
use super::engine::{EngineError, EngineOutput, Request, SpeechEngine, Word, iso639, spread_words};

/// Where and how to call the service.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiOptions {
    /// Base URL (`https://api.openai.com`); a trailing `/v1` is accepted.
    pub endpoint: String,
    /// Model name sent with each request.
    pub model: String,
    /// Bearer token; never logged.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for OpenAiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OpenAiOptions {
    pub const DEFAULT_ENDPOINT: &'static str = "https://api.openai.com";
    pub const DEFAULT_MODEL: &'static str = "whisper-1";

    pub fn new(endpoint: Option<&str>, model: Option<&str>, api_key: Option<String>) -> Self {
        OpenAiOptions {
            endpoint: endpoint.unwrap_or(Self::DEFAULT_ENDPOINT).to_owned(),
            model: model.unwrap_or(Self::DEFAULT_MODEL).to_owned(),
            api_key,
            timeout: Duration::from_secs(600),
        }
    }
}

/// The transcription URL of a base endpoint.
pub fn transcriptions_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/audio/transcriptions")
    } else {
        format!("{base}/v1/audio/transcriptions")
    }
}

/// The `openai` engine.
#[derive(Debug)]
pub struct OpenAiEngine {
    client: reqwest::Client,
    url: String,
    options: OpenAiOptions,
}

impl OpenAiEngine {
    pub fn new(options: OpenAiOptions) -> Result<Self, EngineError> {
        let url = transcriptions_url(&options.endpoint);
        reqwest::Url::parse(&url)
            .map_err(|e| EngineError::Config(format!("endpoint {:?}: {e}", options.endpoint)))?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| EngineError::Config(format!("HTTP client: {e}")))?;
        Ok(OpenAiEngine {
            client,
            url,
            options,
        })
    }
}

#[derive(Deserialize)]
struct Verbose {
    #[serde(default)]
    text: String,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    words: Option<Vec<VerboseWord>>,
    #[serde(default)]
    segments: Option<Vec<VerboseSegment>>,
}

#[derive(Deserialize)]
struct VerboseWord {
    word: String,
    start: f64,
    end: f64,
}

#[derive(Deserialize)]
struct VerboseSegment {
    start: f64,
    end: f64,
    text: String,
}

/// Reads a `verbose_json` (or plain `json`) transcription answer.
pub fn parse_verbose_json(body: &str) -> Result<EngineOutput, EngineError> {
    let v: Verbose = serde_json::from_str(body)
        .map_err(|e| EngineError::Protocol(format!("not a transcription answer: {e}")))?;
    let text = v.text.trim().to_owned();
    let words = match (v.words, v.segments) {
        (Some(words), _) if !words.is_empty() => words
            .into_iter()
            .map(|w| Word {
                w: w.word.trim().to_owned(),
                start: w.start,
                end: w.end,
            })
            .filter(|w| !w.w.is_empty())
            .collect(),
        (_, Some(segments)) if !segments.is_empty() => segments
            .iter()
            .flat_map(|s| spread_words(&s.text, s.start, s.end))
            .collect(),
        _ => spread_words(&text, 0.0, v.duration.unwrap_or(0.0)),
    };
    Ok(EngineOutput { text, words })
}

impl SpeechEngine for OpenAiEngine {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn max_seconds(&self) -> u32 {
        // 16 kHz 16-bit WAV is 32 kB/s: 600 s is 19.2 MB, under the 25 MiB request limit.
        600
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        request: &Request,
    ) -> Result<EngineOutput, EngineError> {
        let http = |e: reqwest::Error| EngineError::Http {
            url: self.url.clone(),
            message: e.to_string(),
        };
        let file = reqwest::multipart::Part::bytes(wav(samples))
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .map_err(http)?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.options.model.clone())
            .text("language", iso639(&request.language))
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "word")
            .text("timestamp_granularities[]", "segment");
        if !request.phrase_hints.is_empty() {
            form = form.text("prompt", request.phrase_hints.join(", "));
        }
        let mut req = self.client.post(&self.url).multipart(form);
        if let Some(key) = &self.options.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let body = resp.text().await.map_err(http)?;
        if !status.is_success() {
            return Err(EngineError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        parse_verbose_json(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_from_base_with_or_without_v1() {
        assert_eq!(
            transcriptions_url("http://127.0.0.1:8000/"),
            "http://127.0.0.1:8000/v1/audio/transcriptions"
        );
        assert_eq!(
            transcriptions_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1/audio/transcriptions"
        );
    }

    #[test]
    fn word_timings_are_taken_when_given() {
        let out = parse_verbose_json(
            r#"{"text":" Hello there.","words":[{"word":"Hello","start":0.1,"end":0.4},
            {"word":"there.","start":0.5,"end":0.9}],"segments":[{"start":0,"end":1,"text":"x"}]}"#,
        )
        .expect("parse");
        assert_eq!(out.text, "Hello there.");
        assert_eq!(out.words.len(), 2);
        assert_eq!(out.words[1].w, "there.");
        assert_eq!(out.words[1].start, 0.5);
    }

    #[test]
    fn segment_timings_are_spread_over_words() {
        let out = parse_verbose_json(
            r#"{"task":"transcribe","language":"en","duration":4.0,"text":"One two. Three",
            "segments":[{"id":0,"start":0.0,"end":2.0,"text":" One two."},
            {"id":1,"start":2.5,"end":3.5,"text":" Three"}]}"#,
        )
        .expect("parse");
        let words: Vec<&str> = out.words.iter().map(|w| w.w.as_str()).collect();
        assert_eq!(words, ["One", "two.", "Three"]);
        assert_eq!(out.words[2].start, 2.5);
        assert!(out.words[1].end <= 2.0 + 1e-9);
    }

    #[test]
    fn plain_json_and_garbage() {
        let out = parse_verbose_json(r#"{"text":"just text"}"#).expect("plain");
        assert_eq!(out.words.len(), 2);
        assert!(matches!(
            parse_verbose_json("<html>502</html>"),
            Err(EngineError::Protocol(_))
        ));
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let o = OpenAiOptions::new(None, None, Some("sk-secret".into()));
        assert!(!format!("{o:?}").contains("sk-secret"));
    }
}

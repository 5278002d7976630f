//! The `google` engine's wire format: Cloud Speech-to-Text v1 `speech:recognize` requests built
//! from a piece of audio, and their answers parsed into words with timings.
//!
//! Each party's channel is sent on its own as LINEAR16 mono at 16 kHz, so results need no
//! channel tags. Phrase hints are the request's `speechContexts` (recording-portal F-79).
//! Synchronous recognition takes at most one minute of audio: the job cuts longer channels
//! into pieces of [`MAX_SECONDS`].

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::audio::RATE;
use super::engine::{EngineError, EngineOutput, Request, Word};

/// Longest audio of one synchronous request, with a margin under the service's 60 s.
pub const MAX_SECONDS: u32 = 55;

/// Default service base URL.
pub const DEFAULT_ENDPOINT: &str = "https://speech.googleapis.com";

/// The `speech:recognize` URL of a base endpoint.
pub fn recognize_url(endpoint: &str) -> String {
    format!("{}/v1/speech:recognize", endpoint.trim_end_matches('/'))
}

/// The JSON body of a `speech:recognize` request for one piece of audio.
pub fn recognize_request(samples: &[i16], request: &Request, model: Option<&str>) -> Value {
    let mut pcm = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    let mut config = json!({
        "encoding": "LINEAR16",
        "sampleRateHertz": RATE,
        "audioChannelCount": 1,
        "languageCode": request.language,
        "enableWordTimeOffsets": true,
        "enableAutomaticPunctuation": true,
    });
    if let Some(model) = model {
        config["model"] = json!(model);
    }
    if !request.phrase_hints.is_empty() {
        config["speechContexts"] = json!([{ "phrases": request.phrase_hints }]);
    }
    json!({
        "config": config,
        "audio": { "content": base64::engine::general_purpose::STANDARD.encode(pcm) },
    })
}

#[derive(Deserialize)]
struct RecognizeResponse {
    #[serde(default)]
    results: Vec<SpeechResult>,
}

#[derive(Deserialize)]
struct SpeechResult {
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

#[derive(Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    words: Vec<WordInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WordInfo {
    word: String,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
}

/// A protobuf JSON Duration (`"1.300s"`) in seconds.
pub fn duration_seconds(text: &str) -> Result<f64, EngineError> {
    text.strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| EngineError::Protocol(format!("bad duration {text:?}")))
}

/// Reads a `speech:recognize` answer: the best alternative of each result, in order.
pub fn parse_recognize_response(body: &str) -> Result<EngineOutput, EngineError> {
    let resp: RecognizeResponse = serde_json::from_str(body)
        .map_err(|e| EngineError::Protocol(format!("not a recognize answer: {e}")))?;
    let mut text: Vec<String> = Vec::new();
    let mut words = Vec::new();
    for result in resp.results {
        let Some(best) = result.alternatives.into_iter().next() else {
            continue;
        };
        let t = best.transcript.trim();
        if !t.is_empty() {
            text.push(t.to_owned());
        }
        for w in best.words {
            let start = w.start_time.as_deref().map(duration_seconds).transpose()?;
            let end = w.end_time.as_deref().map(duration_seconds).transpose()?;
            let start = start.unwrap_or(0.0);
            words.push(Word {
                w: w.word,
                start,
                end: end.unwrap_or(start),
            });
        }
    }
    Ok(EngineOutput {
        text: text.join(" "),
        words,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_format_language_and_hints() {
        let req = Request {
            language: "en-GB".into(),
            phrase_hints: vec!["CallVault".into(), "account number".into()],
        };
        let body = recognize_request(&[1, -2], &req, Some("phone_call"));
        let c = &body["config"];
        assert_eq!(c["encoding"], "LINEAR16");
        assert_eq!(c["sampleRateHertz"], 16000);
        assert_eq!(c["audioChannelCount"], 1);
        assert_eq!(c["languageCode"], "en-GB");
        assert_eq!(c["enableWordTimeOffsets"], true);
        assert_eq!(c["model"], "phone_call");
        assert_eq!(
            c["speechContexts"][0]["phrases"],
            json!(["CallVault", "account number"])
        );
        // 1 and -2 as little-endian 16-bit: 01 00 fe ff.
        assert_eq!(body["audio"]["content"], "AQD+/w==");
        let bare = recognize_request(&[], &Request::default(), None);
        assert!(bare["config"].get("speechContexts").is_none());
        assert!(bare["config"].get("model").is_none());
    }

    #[test]
    fn response_words_and_text_in_order() {
        let out = parse_recognize_response(
            r#"{"results":[
              {"alternatives":[{"transcript":"hello there","confidence":0.9,
                "words":[{"startTime":"0s","endTime":"0.400s","word":"hello"},
                         {"startTime":"0.400s","endTime":"0.900s","word":"there"}]},
                {"transcript":"yellow hair"}],"resultEndTime":"1s","languageCode":"en-us"},
              {"alternatives":[{"transcript":" account number","words":[
                {"startTime":"2.100s","endTime":"2.500s","word":"account"},
                {"startTime":"2.500s","endTime":"3s","word":"number"}]}]}],
             "totalBilledTime":"4s"}"#,
        )
        .expect("parse");
        assert_eq!(out.text, "hello there account number");
        assert_eq!(out.words.len(), 4);
        assert_eq!(out.words[1].end, 0.9);
        assert_eq!(out.words[3].start, 2.5);
        assert_eq!(out.words[3].end, 3.0);
    }

    #[test]
    fn empty_and_bad_answers() {
        assert_eq!(parse_recognize_response("{}").expect("empty").text, "");
        assert!(parse_recognize_response("nope").is_err());
        assert!(
            parse_recognize_response(
                r#"{"results":[{"alternatives":[{"transcript":"x","words":[{"word":"x","startTime":"soon"}]}]}]}"#
            )
            .is_err()
        );
        assert!(duration_seconds("-1s").is_err());
        assert_eq!(duration_seconds("1.5s").expect("ok"), 1.5);
    }

    #[test]
    fn url() {
        assert_eq!(
            recognize_url("https://speech.googleapis.com/"),
            "https://speech.googleapis.com/v1/speech:recognize"
        );
    }
}

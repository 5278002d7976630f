# The local whisper engine's worker: loads a CTranslate2 Whisper model with faster-whisper and
# transcribes requests from stdin until stdin closes. Started and supervised by
# `callvault job transcribe`; one request at a time.
#
# Protocol (one JSON object per line; audio never touches the disk):
#   worker -> job   {"ready": true, "versions": {...}}   or {"ready": false, "error": "..."}
#   job -> worker   {"samples": N, "language": "en", "hotwords": "..." | null}
#                   followed by exactly 2*N bytes: mono 16 kHz signed 16-bit little-endian PCM
#   worker -> job   {"ok": true, "text": "...", "words": [{"w": "...", "start": s, "end": s}]}
#                   or {"ok": false, "error": "..."}
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
out = sys.stdout
# Anything a library prints goes to stderr (the job's log), never into the protocol.
sys.stdout = sys.stderr


LOGPROB_THRESHOLD = -1.0


def send(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def main():
    model_path, threads = sys.argv[1], int(sys.argv[2])
    try:
        import ctranslate2
        import faster_whisper
        import numpy as np
        from faster_whisper import WhisperModel

        model = WhisperModel(
            model_path, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1
        )
    except Exception as e:  # noqa: BLE001 - reported to the job, which names the model path
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    send(
        {
            "ready": True,
            "versions": {
                "faster_whisper": faster_whisper.__version__,
                "ctranslate2": ctranslate2.__version__,
            },
        }
    )
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        try:
            req = json.loads(line)
            n = int(req["samples"])
        except (ValueError, KeyError, TypeError) as e:
            # The audio that follows cannot be skipped: the stream is out of step.
            send({"ok": False, "error": f"bad request header: {e}"})
            return 1
        raw = stdin.read(2 * n)
        if len(raw) != 2 * n:
            send({"ok": False, "error": "audio shorter than announced"})
            return 1
        try:
            audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
            segments, _ = model.transcribe(
                audio,
                language=req.get("language") or None,
                hotwords=req.get("hotwords") or None,
                word_timestamps=True,
                beam_size=5,
                condition_on_previous_text=False,
                # Greedy-to-beam decoding only: Whisper's temperature fallback samples at
                # random, so the same call gave a different transcript on each run.
                temperature=0.0,
                # Silence left to Whisper is where it invents text ("thanks for watching"):
                # a transcript must hold only what was said, so the voice detector that ships
                # with faster-whisper passes only speech (timestamps stay the call's own).
                vad_filter=True,
            )
            text, words = [], []
            for seg in segments:
                # Below this mean log-probability Whisper itself judges a decode failed (its
                # `logprob_threshold`); without the fallback such a segment is text the model
                # invented after the speech ended ("at the end of the video"), so it is left out.
                if seg.avg_logprob < LOGPROB_THRESHOLD:
                    continue
                text.append(seg.text)
                for w in seg.words or []:
                    words.append(
                        {"w": w.word.strip(), "start": float(w.start), "end": float(w.end)}
                    )
            send({"ok": True, "text": "".join(text).strip(), "words": words})
        except Exception as e:  # noqa: BLE001 - one bad request must not end the worker
            send({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    sys.exit(main())

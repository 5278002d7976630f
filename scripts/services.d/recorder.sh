# ensure_recorder_test_tools: what the recorder's call tests use besides sipp: espeak-ng speaks
# the two parties' audio, sox turns it into the PCM the tests packetise, and libsrtp (through
# pylibsrtp, PyPI, hash-pinned, in a venv under $CALLVAULT_CACHE/srtp) is the independent SRTP
# implementation the recorder's and `callvault call`'s are checked against
# (recorder/tests/tools/srtp_oracle.py); socat, with OpenSSL, carries sipp's TCP calls over TLS,
# since Debian's sipp is built without TLS. Exports CALLVAULT_TEST_SRTP_PYTHON.
ensure_recorder_test_tools() {
  ensure_packages sip-tester espeak-ng sox python3-venv socat
  ensure_srtp_oracle
}

# Wheels for CPython 3.11 on x86_64 Linux; libsrtp (with its AES-GCM) is inside pylibsrtp's.
SRTP_REQUIREMENTS=$(cat <<'REQ'
pylibsrtp==1.0.0 --hash=sha256:293c9f2ac21a2bd689c477603a1aa235d85cf252160e6715f0101e42a43cbedc
cffi==2.1.1 --hash=sha256:34e261f78cb6ceaaa36f42f2613f4380d94d9c759a9c73c769ee6e0247364632
pycparser==3.12 --hash=sha256:a076f3f489b39b43ed13563a1dafe42447445bec2e294154ec5c57fcdda4c85e
REQ
)

ensure_srtp_oracle() {
  local key; key=$(printf '%s\n' "$SRTP_REQUIREMENTS" | sha256sum | cut -c1-12)
  local venv="$CALLVAULT_CACHE/srtp/venv-$key"
  if ! "$venv/bin/python" -c 'import pylibsrtp' 2>/dev/null; then
    log "installing pylibsrtp 1.0.0 (hash-pinned)"
    rm -rf "$venv"
    "${CALLVAULT_PYTHON:-python3}" -m venv "$venv" || return 1
    printf '%s\n' "$SRTP_REQUIREMENTS" >"$venv/requirements.txt"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --only-binary :all: \
      --require-hashes -r "$venv/requirements.txt" >&2 || { rm -rf "$venv"; return 1; }
  fi
  export CALLVAULT_TEST_SRTP_PYTHON="$venv/bin/python"
}

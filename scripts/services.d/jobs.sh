# Jobs: what the alarm tests need.
#
#   start_smtp   aiosmtpd (PyPI, hash-pinned, in a venv under $CALLVAULT_CACHE/smtp) on loopback,
#                storing every message it accepts in a Maildir with the envelope recipients in
#                X-RcptTo. Exports CALLVAULT_TEST_SMTP_PORT and CALLVAULT_TEST_SMTP_MAILDIR.

SMTP_REQUIREMENTS=$(cat <<'REQ'
aiosmtpd==1.4.6 --hash=sha256:72c99179ba5aa9ae0abbda6994668239b64a5ce054471955fe75f581d2592475
atpublic==9.0.0 --hash=sha256:449c3c4f0c74df79749d6fe225ba55e2a2fce34b303f0329211e4d6989ed6f6e
attrs==26.1.0 --hash=sha256:c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309
REQ
)

start_smtp() {
  ensure_packages python3-venv
  local port=${CALLVAULT_SMTP_PORT:-58025}
  local maildir="$CALLVAULT_RUN/smtp/maildir"
  export CALLVAULT_TEST_SMTP_PORT=$port CALLVAULT_TEST_SMTP_MAILDIR=$maildir
  # A server already listening (an earlier run's) is reused: wait for its greeting rather than
  # start a second one that cannot bind. A loaded machine can take seconds to greet.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    smtp_greets "$port" 30 && return 0
    log "something on 127.0.0.1:$port does not answer as an SMTP server"
    return 1
  fi
  local key; key=$(printf '%s\n' "$SMTP_REQUIREMENTS" | sha256sum | cut -c1-12)
  local venv="$CALLVAULT_CACHE/smtp/venv-$key"
  if [ ! -x "$venv/bin/aiosmtpd" ]; then
    log "installing aiosmtpd 1.4.6 (hash-pinned)"
    rm -rf "$venv"
    "${CALLVAULT_PYTHON:-python3}" -m venv "$venv" || return 1
    printf '%s\n' "$SMTP_REQUIREMENTS" >"$venv/requirements.txt"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --only-binary :all: \
      --require-hashes -r "$venv/requirements.txt" >&2 || { rm -rf "$venv"; return 1; }
  fi
  # Maildir needs its three folders; aiosmtpd creates them only for a path that does not exist.
  mkdir -p "$maildir/tmp" "$maildir/new" "$maildir/cur"
  log "starting aiosmtpd 1.4.6 on 127.0.0.1:$port"
  setsid nohup "$venv/bin/aiosmtpd" -n -l "127.0.0.1:$port" \
    -c aiosmtpd.handlers.Mailbox "$maildir" \
    >"$CALLVAULT_RUN/smtp/log" 2>&1 </dev/null &
  smtp_greets "$port" 30 && return 0
  log "aiosmtpd did not start; last lines of $CALLVAULT_RUN/smtp/log:"
  tail -n 20 "$CALLVAULT_RUN/smtp/log" >&2
  return 1
}

# smtp_greets PORT SECONDS: whether an SMTP server on PORT sends its "220" greeting in time.
smtp_greets() {
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Read the first line ourselves: a pipe from curl fails under pipefail when curl times out
    # on the connection the server keeps open, even though the greeting arrived.
    if timeout 6 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"; read -r -t 5 line <&3; [[ $line == 220* ]]' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

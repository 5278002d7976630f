# Coverage-guided fuzzing of the recorder's parsers (recorder/fuzz) with libFuzzer on the stable
# toolchain: libfuzzer-sys compiles libFuzzer itself, and the instrumentation it needs is enabled
# with stable codegen flags (the sancov-module pass), so neither nightly nor cargo-fuzz is needed.
# Without a sanitizer, as memory errors are ruled out by safe Rust; panics, integer overflow and
# debug assertions abort the run (the profile in recorder/fuzz/Cargo.toml keeps them on).
#
# By hand: `source scripts/services.sh; run_fuzz_targets 600` fuzzes each target for ten minutes;
# `$(fuzz_bin_dir)/<target> <file>` replays one input.

FUZZ_TARGETS=(sip_message sdp rs_metadata multipart rtp_path srtp)
FUZZ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FUZZ_RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"

# fuzz_bin_dir: where build_fuzz_targets puts the target binaries.
fuzz_bin_dir() {
  echo "$CALLVAULT_CACHE/fuzz-target/$(rustc -vV | sed -n 's/^host: //p')/release"
}

# build_fuzz_targets: builds every target. Own target dir: the instrumentation flags would
# otherwise invalidate the main build's artifacts. The main workspace's lock file pins the
# recorder's dependencies, so fuzzing builds the same versions the recorder ships with.
build_fuzz_targets() {
  local dir="$FUZZ_ROOT/recorder/fuzz"
  cp "$FUZZ_ROOT/Cargo.lock" "$dir/Cargo.lock"
  log "building fuzz targets: ${FUZZ_TARGETS[*]}"
  # --target keeps the flags off build scripts and proc macros.
  CARGO_TARGET_DIR="$CALLVAULT_CACHE/fuzz-target" RUSTFLAGS="$FUZZ_RUSTFLAGS" \
    cargo build --quiet --manifest-path "$dir/Cargo.toml" --release --bins \
    --target "$(rustc -vV | sed -n 's/^host: //p')"
}

# run_fuzz_targets [SECONDS]: fuzzes each target for SECONDS (default $CALLVAULT_FUZZ_SECONDS or
# 45), starting from the committed seeds and the corpus earlier runs grew (kept in the cache).
# A crash fails the run after all targets ran; the log then shows the input, hex-dumped.
run_fuzz_targets() {
  local seconds=${1:-${CALLVAULT_FUZZ_SECONDS:-45}}
  build_fuzz_targets
  local bins; bins=$(fuzz_bin_dir)
  local failed=()
  for t in "${FUZZ_TARGETS[@]}"; do
    local corpus="$CALLVAULT_CACHE/fuzz/corpus/$t" artifacts="$CALLVAULT_RUN/fuzz/$t"
    local seeds=("$FUZZ_ROOT/recorder/fuzz/seeds/$t")
    [ "$t" = sip_message ] && seeds+=("$FUZZ_ROOT/recorder/tests/fixtures/sip")
    rm -rf "$artifacts" && mkdir -p "$corpus" "$artifacts"
    if "$bins/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$artifacts/log" 2>&1; then
      printf '==> fuzz %-12s %s\n' "$t" "$(fuzz_summary "$artifacts/log")" >&2
    else
      failed+=("$t")
      log "fuzz target $t failed:"
      tail -n 60 "$artifacts/log" >&2
      for f in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
        [ -e "$f" ] || continue
        log "input that made $t fail ($(basename "$f"), $(wc -c <"$f") bytes):"
        od -A d -t x1z -v "$f" >&2
      done
    fi
  done
  echo "fuzz: $((${#FUZZ_TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  if [ ${#failed[@]} -gt 0 ]; then
    log "fuzzing found failures in: ${failed[*]} (reproduce: $bins/<target> <input file>)"
    return 1
  fi
}

# fuzz_summary LOG: runs, executions per second, coverage and corpus size from libFuzzer's log.
fuzz_summary() {
  local runs rate cov corp
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$1")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$1")
  cov=$(grep -o 'cov: [0-9]*' "$1" | tail -n 1)
  corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$1" | tail -n 1)
  echo "$runs runs, $rate exec/s, $cov, $corp"
}

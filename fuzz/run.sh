#!/usr/bin/env bash
# Runs one coverage-guided fuzz target on the stable toolchain: builds fuzz/ with libFuzzer's
# coverage instrumentation (the flags cargo-fuzz passes; no nightly feature is needed), then
# fuzzes for SECONDS (default 60) from a seed corpus of PROTOCOL.md's vectors.
#
#   fuzz/run.sh TARGET [SECONDS] [more libFuzzer flags]
#   targets: frame_codec handshake node_msg block
#
# New inputs go to fuzz/corpus/TARGET (not committed); a crash is written to
# fuzz/artifacts/TARGET/ and the script exits non-zero. Copy a crash input into
# fuzz/regressions/TARGET/ once fixed: tests/fuzz_replay.rs replays it on every cargo test.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]}
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros (as cargo-fuzz
# does): only the fuzzed code is instrumented.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --quiet --target "$host" --bins
bin="target/$host/release"
mkdir -p "corpus/$target" "artifacts/$target"
# The target writes its seeds (PROTOCOL.md's vectors) into the corpus when it starts.
PEERLINK_FUZZ_SEEDS="corpus/$target" exec "./$bin/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$secs" -print_final_stats=1 \
    -rss_limit_mb=2048 "$@"

#!/usr/bin/env bash
# Runs one coverage-guided fuzz target on the stable toolchain: builds fuzz/ with libFuzzer's
# coverage instrumentation (flags.sh: the flags cargo-fuzz passes; no nightly feature is
# needed), then fuzzes for SECONDS (default 60) from a seed corpus of PROTOCOL.md's vectors.
#
#   fuzz/run.sh TARGET [SECONDS] [more libFuzzer flags]
#   targets: frame_codec handshake noise_responder noise_initiator secure_record addrs
#            addr_snapshot, and with the node (feature `node`): node_msg block ban_record
#
# New inputs go to fuzz/corpus/TARGET (not committed); a crash is written to
# fuzz/artifacts/TARGET/ and the script exits non-zero. Copy a crash input into
# fuzz/regressions/TARGET/ once fixed: tests/fuzz_replay.rs replays it on every cargo test.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]}
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
source ./flags.sh
features=()
case "$target" in
    node_msg | block | ban_record) features=(--features node) ;;
esac
cargo build --release --quiet --target "$FUZZ_HOST" --bins "${features[@]}"
bin="${CARGO_TARGET_DIR:-target}/$FUZZ_HOST/release"
mkdir -p "corpus/$target" "artifacts/$target"
# The target writes its seeds (PROTOCOL.md's vectors) into the corpus when it starts.
PEERLINK_FUZZ_SEEDS="corpus/$target" exec "$bin/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$secs" -print_final_stats=1 \
    -rss_limit_mb=2048 "$@"

#!/usr/bin/env bash
# CI's bounded fuzzing run: builds every target that needs only peerlink-actors with libFuzzer
# (one cargo invocation, the flags of run.sh), then runs each for SECONDS (default 20) from the
# spec's seeds plus fuzz/regressions/TARGET. A crash fails CI; its input is left in
# fuzz/artifacts/TARGET/ (copy it into fuzz/regressions/TARGET/ once fixed).
#
#   fuzz/ci.sh [SECONDS]
#
# The node's targets (node_msg, block, ban_record; feature `node`) would pull actix-web and
# redb into the instrumented build; CI replays them in tests/fuzz_replay.rs instead, and
# fuzz/run.sh runs them by hand.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
targets=(frame_codec handshake noise_responder noise_initiator secure_record addrs addr_snapshot)
source ./flags.sh
cargo build --release --quiet --target "$FUZZ_HOST" --bins
bin="${CARGO_TARGET_DIR:-target}/$FUZZ_HOST/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "artifacts/$t"
    extra=()
    [ -d "regressions/$t" ] && extra+=("regressions/$t")
    echo "-- $t, ${secs} s"
    if ! PEERLINK_FUZZ_SEEDS="$work/$t" "$bin/$t" "$work/$t" "${extra[@]}" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 2>"$work/$t.log"; then
        tail -n 60 "$work/$t.log"
        echo "fuzz target $t failed: input in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE' "$work/$t.log" \
        | tr '\n' ' '
    echo
done

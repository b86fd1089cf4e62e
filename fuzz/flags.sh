# Sourced by run.sh and ci.sh: libFuzzer's coverage instrumentation on the stable toolchain.
# These are the flags cargo-fuzz passes (sancov module pass, inline 8-bit counters, pc table,
# trace-compares); none is a -Z flag, so neither nightly nor RUSTC_BOOTSTRAP is needed.
# An explicit --target (FUZZ_HOST) keeps RUSTFLAGS away from build scripts and proc macros, as
# cargo-fuzz does: only the fuzzed code is instrumented.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
FUZZ_HOST=$(rustc -vV | sed -n 's/^host: //p')
export FUZZ_HOST

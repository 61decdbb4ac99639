#!/usr/bin/env bash
# Fuzzes every target for FUZZTIME each (default 10m), one at a time on one
# worker (the machine is shared), then copies the inputs the fuzzer found
# interesting from Go's cache into each package's testdata/fuzz, so `go
# test` replays them as seeds from then on. Usage: FUZZTIME=10m scripts/fuzz-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-10m}"
targets=(
  "./protocol FuzzReadFrame"
  "./protocol FuzzParseRequest"
  "./protocol FuzzOffsetSpan"
  "./protocol FuzzParseProduceHead"
  "./proxy FuzzRewriteResponses"
  "./proxy FuzzSplitProduce"
  "./proxy FuzzClientSASL"
  "./raftstore FuzzApply"
)
cache="$(go env GOCACHE)/fuzz"
for entry in "${targets[@]}"; do
  read -r pkg name <<<"$entry"
  echo "== $pkg $name for $FUZZTIME"
  start=$(date +%s)
  go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel 1 2>&1 | tail -3
  echo "   took $(( $(date +%s) - start )) s"
  importpath=$(go list "$pkg")
  if [ -d "$cache/$importpath/$name" ]; then
    mkdir -p "$pkg/testdata/fuzz/$name"
    cp -n "$cache/$importpath/$name"/* "$pkg/testdata/fuzz/$name/" 2>/dev/null || true
    echo "   corpus: $(ls "$pkg/testdata/fuzz/$name" | wc -l) inputs in $pkg/testdata/fuzz/$name"
  fi
done

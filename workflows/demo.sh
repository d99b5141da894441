#!/usr/bin/env bash
# The `make demo` job: build a store from the bundled sample media with the default
# engine (an embedded local Ray), compute its fbank statistics, verify it, print its info.
set -euo pipefail
out="${1:-demo_out}"
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
pipeline build --manifest "$here/pipeline/sample_media/demo_manifest.csv" \
    --out "$out/store" --workers 2 --shard-size 3
pipeline stats "$out/store"
pipeline verify "$out/store"
pipeline info "$out/store"

#!/usr/bin/env bash
# The zero-copy engine example (clients/python/zero_copy_engine.py) against a server on
# this machine's GPU, for two workloads, each timed against the HTTP-bytes path in the
# same run: 24 blocks, which stay in tier 0, and 160 blocks through a tier 0 of 32 slots
# (evictions to tier 1 and disk, then promotions back). With WEIGHTS=<safetensors dir>
# the server also loads weights, and the example maps their arena and reads it.
#
#   bash bench/zero-copy/run.sh [OUT_DIR]        (default bench/zero-copy/results)
#
# Needs the built project (npm install), a GPU, and python3 with torch and cupy.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench/zero-copy/results}
port=${PORT:-8420}
mkdir -p "$out" data
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-16} PYTHONPATH=clients/python PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
config=(--set tiers.raw.bytes=64MiB --set tiers.quantized.bytes=32MiB --set tiers.disk.bytes=1GiB --set tiers.disk.path=data/zero-copy.slots)
if [ -n "${WEIGHTS:-}" ]; then config+=(--set "weights.source=$WEIGHTS"); fi
PORT=$port node dist/runtime/cli.js serve "${config[@]}" > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 120); do
  python3 -c "import urllib.request; urllib.request.urlopen('$url/v1/ready')" 2>/dev/null && break
  sleep 0.5
done
python3 clients/python/zero_copy_engine.py --url "$url" --blocks 24 --rounds 3 --json "$out/resident.json" | tee "$out/resident.log"
python3 clients/python/zero_copy_engine.py --url "$url" --blocks 160 --rounds 2 --json "$out/evicting.json" | tee "$out/evicting.log"

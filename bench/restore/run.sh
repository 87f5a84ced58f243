#!/usr/bin/env bash
# Restoring an evicted prefix against recomputing it, on this machine's GPU, in one run
# (bench/restore/README.md):
#   1. the pipeline's own spill and fill rates (node dist/bench/gpu/spill-fill.js) on the
#      disk the tier file lives on;
#   2. a server whose tier 0 holds the largest context and some room, with a small tier 1,
#      so that evicted contexts go to disk, and a disk tier for the contexts quantized;
#   3. restore.py against it: restores by one client, by 16 clients, through the HTTP batch
#      read and block by block; writes into free HBM slots; the prefill of the same lengths
#      on the same GPU; the comparison with the fill report of step 1.
#
#   bash bench/restore/run.sh [OUT_DIR]        (default $OUT, else bench/restore/results)
#
# Environment (defaults in brackets):
#   LENGTHS            context lengths in tokens, multiples of 16 ["2048 4096 8192 32768 131072"];
#                      the largest sizes the tiers, so a shorter list makes a shorter run
#   RAW_FACTOR         tier 0 as a multiple of the largest context (and of 32k tokens) [1.25]
#   QUANT_BYTES        tier 1 [1GiB]
#   RESERVE            eviction.reserve, the share of each memory tier kept free ahead of
#                      demand [the server's default, 0.05]; 0 evicts only on demand
#   HOST_BYTES         the host tier (pinned host memory) [0: none, evicted contexts go to
#                      disk]; large enough for the largest context, evictions stop there and
#                      restores come from host memory
#   REPEATS, CLIENTS   one-client and concurrent restores per length, taking turns [3];
#                      concurrent clients [16]
#   CLIENT_THREADS     set: the concurrent clients are threads of restore.py, not processes
#   FILL_BESIDE        0: no 4-bit fill (spill-fill --only 4bit, a few seconds) at the end of
#                      each round of restores to set its one-client restore against [1]
#   HTTP_LENGTHS, PER_BLOCK_LENGTHS
#                      lengths that also restore through the HTTP batch read [all] and
#                      with one acquire per block [8192,32768]; "none" skips them
#   SPILL_FILL_BLOCKS  blocks of the spill-fill bench [2048]
#   DISK_IN_FLIGHT     the server's tiers.disk.inFlight [the depth spill-fill found best on this disk]
#   PORT [8420], DATA_DIR (the tier file and the spill-fill files) [data]
#   TIME_BUDGET        seconds the whole run may take [470]: restore.py is stopped when they
#                      are spent, and skips its optional restores (repeats, 16 clients, HTTP
#                      batch, per-block) once less than PREFILL_RESERVE [170] is left for the prefill
#   SPILL_FILL_TIMEOUT seconds before the spill-fill bench is stopped [150]
#
# Needs the built project (npm install: TypeScript and the addon with CUDA), a GPU, and
# python3 with torch (and CuPy). Writes spill-fill.json/.md, restore.json/.md, restore.log
# and server.log under OUT_DIR. About 4-5 minutes on an H200 with the default lengths.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-bench/restore/results}}
lengths=${LENGTHS:-2048 4096 8192 32768 131072}
port=${PORT:-8420}
data=${DATA_DIR:-data}
mkdir -p "$out" "$data"
for f in dist/runtime/cli.js dist/bench/gpu/spill-fill.js; do
  if [ ! -f "$f" ]; then echo "missing $f: build the project first (npm install)" >&2; exit 2; fi
done
export UV_THREADPOOL_SIZE=64 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# Tier sizes from the largest length: tier 0 = RAW_FACTOR x its raw blocks (at least 32k
# tokens, for the free-slot write) plus 64 slots; tier 2 = 2.5 x its blocks quantized plus
# 1024 slots (a 4-bit block takes a 561152-byte disk slot, 0.27 of its 2 MiB).
read -r raw_bytes disk_bytes max_tokens < <(python3 - "$lengths" "${RAW_FACTOR:-1.25}" <<'EOF'
import math, sys
lengths = [int(x) for x in sys.argv[1].replace(",", " ").split()]
factor = float(sys.argv[2])
if not lengths or any(n <= 0 or n % 16 for n in lengths):
    sys.exit(f"LENGTHS must be positive multiples of 16 tokens, got {sys.argv[1]!r}")
blocks = max(max(lengths), 32768) // 16
print((math.ceil(blocks * factor) + 64) * 2 * 2**20, (math.ceil(2.5 * blocks) + 1024) * 561152, max(max(lengths), 131072))
EOF
)
if [ -z "${max_tokens:-}" ]; then echo "bad LENGTHS: $lengths" >&2; exit 2; fi
echo "lengths: $lengths; tier 0 $((raw_bytes / 2**20)) MiB, tier 1 ${QUANT_BYTES:-1GiB}, host tier ${HOST_BYTES:-0}, disk tier $((disk_bytes / 2**20)) MiB in $data" | tee "$out/settings.txt"

server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -f "$data/restore.slots"
  rm -rf "$data/spill-fill"
}
trap cleanup EXIT

echo "== spill-fill (the pipeline's fill rate on this disk)"
timeout "${SPILL_FILL_TIMEOUT:-150}" node dist/bench/gpu/spill-fill.js --dir "$data/spill-fill" --blocks "${SPILL_FILL_BLOCKS:-2048}" \
  --out "$out/spill-fill.json" 2>&1 | tee "$out/spill-fill.log" \
  || echo "spill-fill failed: the restore runs without a fill rate to compare with" | tee -a "$out/spill-fill.log"

# The server's disk queue depth: DISK_IN_FLIGHT, else the depth the spill-fill bench found best
# on this disk (tiers.disk.inFlight), else the server's default.
depth=${DISK_IN_FLIGHT:-$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['chosenInFlight'])" "$out/spill-fill.json" 2>/dev/null || true)}
echo "== server (disk operations in flight: ${depth:-the default})" | tee -a "$out/settings.txt"
PORT=$port node --initial-old-space-size=128 dist/runtime/cli.js serve \
  --set "tiers.raw.bytes=$raw_bytes" --set "tiers.quantized.bytes=${QUANT_BYTES:-1GiB}" \
  --set "tiers.host.bytes=${HOST_BYTES:-0}" \
  --set "eviction.reserve=${RESERVE:-0.05}" \
  --set "tiers.disk.bytes=$disk_bytes" --set "tiers.disk.path=$data/restore.slots" ${depth:+--set "tiers.disk.inFlight=$depth"} \
  --set "limits.maxTokensPerSequence=$max_tokens" --set "limits.maxTotalTokens=$((max_tokens * 64))" \
  --set server.maxDiskQueue=65536 --set server.maxEventLoopDelayMs=1000 \
  > "$out/server.log" 2>&1 &
server=$!
url=http://127.0.0.1:$port
for _ in $(seq 240); do
  if python3 -c "import urllib.request; urllib.request.urlopen('$url/v1/ready', timeout=2)" 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "the server exited:" >&2; tail -20 "$out/server.log" >&2; exit 1; fi
  sleep 0.5
done

echo "== restore"
# What is left of the time budget: the optional restores stop early enough for the prefill.
left=$((${TIME_BUDGET:-470} - SECONDS))
if [ "$left" -lt 120 ]; then left=120; fi
deadline=$((left - ${PREFILL_RESERVE:-170}))
if [ "$deadline" -lt 1 ]; then deadline=1; fi
# Each one-client restore is also set against a fill of its own minute: this disk drifts.
beside=
if [ "${FILL_BESIDE:-1}" != 0 ]; then
  beside="node dist/bench/gpu/spill-fill.js --dir $data/spill-fill --only 4bit --in-flight ${depth:-16} --repeats 1 --blocks ${SPILL_FILL_BLOCKS:-2048}"
fi
timeout "$left" python3 bench/restore/restore.py --url "$url" --lengths "$lengths" ${beside:+--fill-beside "$beside"} --work-dir "$out" \
  --repeats "${REPEATS:-3}" --clients "${CLIENTS:-16}" ${CLIENT_THREADS:+--client-threads} --deadline-s "$deadline" \
  --http-lengths "${HTTP_LENGTHS:-all}" --per-block-lengths "${PER_BLOCK_LENGTHS:-8192,32768}" \
  --fill-report "$out/spill-fill.json" --json "$out/restore.json" 2>&1 | tee "$out/restore.log"

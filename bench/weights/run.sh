#!/usr/bin/env bash
# Weights load bench for a GPU machine. One synthetic checkpoint (at least $GIB GiB in
# $SHARDS shards, made once by make_checkpoint.py), loaded three ways, the page cache
# dropped before each:
#   torch     safetensors.torch.load_file(path, device="cuda") over every shard
#   spillway  our loader (node, sink $SINK: host now), $CONCURRENCY reads in flight
#   serve     `spillway serve` with weights.source set, as `npm start` loads them (its own
#             sink: device memory on the GPU backend); the time to ready and /v1/weights' rate
#   dd        $STREAMS parallel dd streams with O_DIRECT into /dev/null: what the disk gives
#   group     with GPUS (e.g. GPUS=0,1): the checkpoint split for that many ranks (once), then
#             `spillway serve --gpus $GPUS`, every rank loading its part onto its GPU at once;
#             each rank's rate and the group's (all bytes over the slowest rank's time), to
#             set against serve (one GPU loading the whole checkpoint alone) and dd
# Each run's JSON, and weights.json gathering them with the machine's description, go to
# $OUT (default build/bench/weights/out). A run that fails is recorded, not fatal.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/weights
out=${OUT:-$root/build/bench/weights/out}
ckpt=${CKPT:-$root/build/bench/weights/ckpt}
gib=${GIB:-8}
shards=${SHARDS:-8}
streams=${STREAMS:-16}
sink=${SINK:-host}
concurrency=${CONCURRENCY:-16}
request=${REQUEST_BYTES:-16MiB}
gpus=${GPUS:-}
mkdir -p "$out"

if [ ! -f "$ckpt/model.safetensors.index.json" ]; then
  python3 "$here/make_checkpoint.py" --out "$ckpt" --gib "$gib" --shards "$shards" > "$out/checkpoint.json"
fi
[ -f "$root/dist/bench/weights/load.js" ] || (cd "$root" && npx tsc -p tsconfig.json) ||
  echo "run.sh: could not build dist/bench/weights/load.js; the spillway run will fail" >&2
files=("$ckpt"/*.safetensors)
if [ -n "$gpus" ]; then
  world=$(awk -F, '{print NF}' <<< "$gpus")
  split=$ckpt-tp$world
  [ -f "$split/spillway-split.json" ] ||
    node "$root/dist/runtime/cli.js" weights split --in "$ckpt" --out "$split" --world "$world" --json > "$out/split.json"
fi

# Drops the checkpoint (and its split) from the page cache and prints how, and what stayed resident.
drop_cache() {
  sync
  local cached=("${files[@]}")
  [ -z "$gpus" ] || cached+=("$split"/rank-*/*.safetensors)
  local how
  if { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    how=drop_caches
  else
    # Not root, or no such knob: ask the kernel to drop these files' clean pages.
    python3 -c 'import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "${cached[@]}"
    how=fadvise_dontneed
  fi
  local resident=null
  if command -v fincore > /dev/null; then
    resident=$(fincore --bytes --noheadings --output RES "${cached[@]}" | awk '{s += $1} END {print s + 0}')
  fi
  printf '{"method": "%s", "residentBytesAfter": %s}' "$how" "$resident"
}

# measure NAME CMD...: drops the cache, runs CMD (which prints one JSON line) into NAME.json.
measure() {
  local name=$1
  shift
  drop_cache > "$out/$name.cache.json"
  if ! "$@" > "$out/$name.json" 2> "$out/$name.err"; then
    printf '{"loader": "%s", "error": %s}\n' "$name" "$(python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()[-2000:]))' < "$out/$name.err")" > "$out/$name.json"
  fi
}

# The checkpoint as pieces of 16 blocks of 16 MiB: "file skip count", the last of a file
# "file skip end" (O_DIRECT wants whole blocks; EOF ends that read short).
dd_pieces() {
  local bs=$((16 * 2 ** 20)) piece=16 size blocks skip
  for f in "${files[@]}"; do
    size=$(stat -c %s "$f")
    blocks=$(((size + bs - 1) / bs))
    for ((skip = 0; skip < blocks; skip += piece)); do
      if ((skip + piece < blocks)); then echo "$f $skip $piece"; else echo "$f $skip end"; fi
    done
  done
}

dd_streams() {
  local bytes start end
  bytes=$(stat -c %s "${files[@]}" | awk '{s += $1} END {print s}')
  start=$(date +%s.%N)
  dd_pieces | xargs -P "$streams" -L 1 sh -c '
    if [ "$3" = end ]; then dd if="$1" of=/dev/null bs=16M skip="$2" iflag=direct status=none
    else dd if="$1" of=/dev/null bs=16M skip="$2" count="$3" iflag=direct status=none; fi' sh || return 1
  end=$(date +%s.%N)
  awk -v b="$bytes" -v s="$start" -v e="$end" -v n="$streams" \
    'BEGIN { printf "{\"loader\": \"dd iflag=direct bs=16M, %d streams\", \"bytes\": %d, \"seconds\": %.6f, \"gbps\": %.4f}\n", n, b, e - s, b / (e - s) / 1e9 }'
}

measure torch python3 "$here/torch_load.py" "$ckpt"
measure spillway env UV_THREADPOOL_SIZE="$concurrency" node "$root/dist/bench/weights/load.js" \
  --source "$ckpt" --sink "$sink" --concurrency "$concurrency" --request-bytes "$request"
measure serve env UV_THREADPOOL_SIZE="$concurrency" node "$root/dist/bench/weights/serve.js" --source "$ckpt" \
  --set weights.concurrency="$concurrency" --set weights.requestBytes="$request"
measure dd dd_streams
if [ -n "$gpus" ]; then
  measure group env UV_THREADPOOL_SIZE="$concurrency" node "$root/dist/bench/weights/serve.js" --source "$split" --gpus "$gpus" \
    --set weights.concurrency="$concurrency" --set weights.requestBytes="$request"
fi

python3 - "$out" "$ckpt" "$gpus" <<'PY'
import json, os, platform, subprocess, sys
out, ckpt, gpus = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError as e:
        return f"unavailable: {e}"
results = []
for name in ("torch", "spillway", "serve", "dd", "group"):
    if name == "group" and not gpus:
        continue
    r = load(f"{name}.json")
    r["pageCache"] = load(f"{name}.cache.json")
    results.append(r)
files = [f for f in os.listdir(ckpt) if f.endswith(".safetensors")]
report = {
    "checkpoint": {"dir": ckpt, "files": len(files), "bytes": sum(os.path.getsize(os.path.join(ckpt, f)) for f in files)},
    "machine": {
        "gpu": run("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"),
        "filesystem": run("df", "-T", ckpt),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "node": run("node", "--version"),
    },
    "results": results,
}
with open(os.path.join(out, "weights.json"), "w") as f:
    json.dump(report, f, indent=1)
for r in results:
    print(f"{r['loader']:60} " + (f"{r['bytes'] / 2**30:8.2f} GiB {r['seconds']:8.2f} s {r['gbps']:7.2f} GB/s" if "gbps" in r else f"failed: {r['error'][-200:]}"))
PY

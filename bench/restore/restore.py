#!/usr/bin/env python3
"""Restoring an evicted prefix beats recomputing it: an engine-like client on the same GPU.

One client (one HTTP connection, one lease) maps spillway's tier 0 through CUDA IPC and,
for each context length L (tokens; 16 a block, 2 MiB a block of Llama-3-8B-like bf16 KV):

1. writes context A: a sequence of L/16 blocks, acquired in one acquire-many (unwritten
   blocks get free tier-0 slots), each slot filled on the GPU with N(0, 1) bf16 values from
   a generator seeded by (context, block), released in one release-many with written: true.
   Timed as "writes into free HBM slots" (acquire + release; the fill is the engine's work).
2. evicts A to disk: writes filler blocks, as many as tiers 0 and 1 hold plus a margin
   (read from GET /v1/status), in acquire-many/release-many chunks, then frees them. The
   filler pushes every block of A out of tier 0 and tier 1 (least recently used first) and
   leaves both empty, so A is on disk only and the restore lands in free slots without
   evicting anything (no disk writes compete with its reads). Status after each eviction
   is in the report.
3. restores A: acquire-many of all its blocks in one request (split only where the server
   refuses a batch larger than what fits, field "max"), timed from request to answer (the
   answer means every block is in its slot). Every block is then checked in its slot against
   its generator: bit-exact where the answer says not lossy, relative L2 error < 0.02 (the
   4-bit bound of the tests) where lossy. Released with release-many (not written).
   Logical GB/s = L/16 * 2 MiB / seconds; physical = disk bytes read (from /metrics) /
   seconds. --repeats times, each after a fresh eviction; the median counts.
4. the same restore by --clients (16) concurrent clients: processes (threads of this one with
   --client-threads), each with its own HTTP connection and lease, each acquiring a contiguous
   1/16 of the blocks in one acquire-many; timed from a common start to the last answer.
   One-client and concurrent restores take turns (--repeats of each, each after its own
   eviction, the one going first alternating); the medians are compared.
   With --fill-beside CMD, CMD (spill-fill's 4-bit fill alone) ends each round, and each
   one-client restore is also set against the fill rate of its own minute: this disk's rate
   drifts by a fifth within minutes, more than a restore differs from the fill. At the
   round's end, the fill's writes fall before one kind of restore and the other in turn.
5. the same restore through the HTTP batch read (POST /v1/sequences/{id}/blocks/read,
   msgpack answers of at most server.maxBatchBytes, one request after another, decoded
   here without copying and copied into GPU memory).
6. for --per-block-lengths (8k and 32k tokens): one acquire request per block, the path
   before acquire-many.

Then: writes into free HBM slots for --write-length tokens (32k) into an empty tier 0,
timed alone; the prefill of the same lengths with a Llama-3-8B-shaped model on the same GPU
(prefill.py, in this process, after the restore work has freed its GPU memory); and per
length restore seconds, prefill seconds, speedup = prefill / restore, and the restore rate
against the pipeline's logical 4-bit fill rate from --fill-report (the JSON that
`node dist/bench/gpu/spill-fill.js --out FILE` writes).

    python3 bench/restore/restore.py --url http://127.0.0.1:8420 --fill-report spill-fill.json \\
        [--lengths 2048,4096,8192,32768,131072] --json restore.json

Needs torch (and CuPy, or a libcudart that ctypes can load) on the GPU the server's tier 0
is on, and a server on the GPU backend whose tier 0 holds the largest context
(bench/restore/run.sh sets one up). Prints progress on stderr, a markdown report on stdout;
writes the JSON after every length, so a run cut short keeps what it measured. Exits 1 if
any block read back is wrong or a step failed. `--self-test` checks the parts that need
neither torch nor a server.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import multiprocessing
import os
import re
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, NamedTuple, Optional

# The batch read's answer is msgpack: the Python client's decoder reads it in place.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
from spillway_msgpack import ExtType, packb, unpackb  # noqa: E402

GB = 1e9
FOUR_BIT_BOUND = 0.02  # ||a - b||^2 / ||a||^2 a block through 4-bit quantization must meet (FOUR_BIT_BOUND of the tests)
DEFAULT_LENGTHS = (2048, 4096, 8192, 32768, 131072)
DEFAULT_PER_BLOCK_LENGTHS = (8192, 32768)
FILLER_MARGIN = 64  # filler blocks past what tiers 0 and 1 hold
FILLER_SOURCES = 64  # distinct filler blocks, copied round-robin
VERIFY_CHUNK = 32  # blocks compared at once
TARGETS = {
    "oneClientVsFill": 0.85,  # restore with one client >= 0.85 of the logical 4-bit fill rate ...
    "oneClientVsFillFromTokens": 8192,  # ... from 8k tokens up
    "fasterThanRecomputeFromTokens": 4096,
    "freeSlotWritesGBps": 20.0,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- HTTP ---------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answer: HTTP status, the stable code, and the error's other fields."""

    def __init__(self, status: int, code: str, message: str, details: dict):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.details = details


def _seg(s: str) -> str:
    return urllib.parse.quote(str(s), safe="")


class Api:
    """JSON over one kept-alive HTTP connection, with an optional bearer token.

    A 503 (the server shedding load, or holding too many bodies) is retried after a short
    sleep: it is answered before the request is handled. Retries are counted in `shed`.
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 900.0, shed_sleep_s: float = 0.01, shed_limit_s: float = 120.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected http://host:port, got {url!r}")
        self.url = url
        self.token = token
        self.timeout = timeout
        self.shed_sleep_s = shed_sleep_s
        self.shed_limit_s = shed_limit_s
        self._host, self._port = parts.hostname, parts.port or 80
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self._conn: Optional[http.client.HTTPConnection] = None
        self.shed = 0
        self.range_form = True  # acquire-many with {start, count}; falls back to {indices}
        self.range_form_note: Optional[str] = None

    def clone(self) -> "Api":
        twin = Api(self.url, self.token, self.timeout, self.shed_sleep_s, self.shed_limit_s)
        twin.range_form = self.range_form
        return twin

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Optional[bytes] = None, content_type: Optional[str] = None) -> tuple[dict, bytearray]:
        headers = dict(self._auth)
        if content_type:
            headers["content-type"] = content_type
        deadline = time.monotonic() + self.shed_limit_s
        while True:
            status, res_headers, data = self._once(method, path, body, headers)
            if status == 503 and time.monotonic() < deadline:
                self.shed += 1
                time.sleep(self.shed_sleep_s)
                continue
            if status >= 400:
                raise _error(status, data)
            return res_headers, data

    def _once(self, method: str, path: str, body: Optional[bytes], headers: dict) -> tuple[int, dict, bytearray]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                res = self._conn.getresponse()
                data = _read_body(res)
                return res.status, {k.lower(): v for k, v in res.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed while idle: reconnect once.
                self.close()
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        _, data = self.request(method, path, payload, None if body is None else "application/json")
        return json.loads(data) if data else None

    # ---- routes ------------------------------------------------------------------------

    def status(self) -> dict:
        return self.json("GET", "/v1/status")

    def metrics(self) -> dict[str, float]:
        _, data = self.request("GET", "/metrics")
        return parse_metrics(bytes(data).decode("utf-8", "replace"))

    def pool(self) -> dict:
        return self.json("GET", "/v1/zero-copy/pool")

    def create_lease(self, client: str, ttl_ms: int) -> str:
        return self.json("POST", "/v1/zero-copy/leases", {"client": client, "ttlMs": ttl_ms})["id"]

    def end_lease(self, lease: str) -> dict:
        return self.json("DELETE", f"/v1/zero-copy/leases/{_seg(lease)}")

    def create_sequence(self, id: Optional[str] = None) -> str:
        return self.json("POST", "/v1/sequences", {} if id is None else {"id": id})["id"]

    def allocate(self, sequence: str, count: int) -> list[dict]:
        return self.json("POST", f"/v1/sequences/{_seg(sequence)}/blocks", {"count": count})["blocks"]

    def free_sequence(self, sequence: str) -> dict:
        return self.json("DELETE", f"/v1/sequences/{_seg(sequence)}")

    def acquire(self, lease: str, sequence: str, index: int) -> dict:
        return self.json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/acquire", {"sequence": sequence, "index": index})

    def acquire_many(self, lease: str, sequence: str, start: int, count: int) -> dict:
        """Blocks start .. start + count - 1 in one request: {"blocks": [...], ...}."""
        path = f"/v1/zero-copy/leases/{_seg(lease)}/acquire-many"
        if self.range_form:
            try:
                return self.json("POST", path, {"sequence": sequence, "start": start, "count": count})
            except ApiError as err:
                # A server that takes only {indices} says so as a validation error (no "max").
                if err.status != 400 or err.code != "INVALID_ARGUMENT" or "max" in err.details:
                    raise
                self.range_form = False
                self.range_form_note = f"start/count refused ({err}); sending indices"
        return self.json("POST", path, {"sequence": sequence, "indices": list(range(start, start + count))})

    def acquire_indices(self, lease: str, sequence: str, indices: list[int]) -> dict:
        return self.json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/acquire-many", {"sequence": sequence, "indices": indices})

    def release_many(self, lease: str, blocks: list[dict]) -> dict:
        """blocks: [{"blockId", "written"}]."""
        return self.json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/release-many", {"blocks": blocks})

    def attach(self, lease: str, prefix: list[str], allocate: Optional[int] = None, id: Optional[str] = None) -> dict:
        body: dict[str, Any] = {"prefix": prefix}
        if allocate is not None:
            body["allocate"] = allocate
        if id is not None:
            body["id"] = id
        return self.json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/attach", body)

    def read_batch(self, sequence: str, indices: list[int]) -> tuple[dict, bytearray]:
        """The HTTP batch read: a msgpack answer {blocks: [{index, tier, format, lossy, promoted, data}]}."""
        return self.request("POST", f"/v1/sequences/{_seg(sequence)}/blocks/read",
                            json.dumps({"indices": indices}).encode(), "application/json")


def _read_body(res: http.client.HTTPResponse) -> bytearray:
    """The whole body into one writable buffer (read in place where the length is known)."""
    length = res.getheader("content-length")
    if length is None:
        return bytearray(res.read())
    buf = bytearray(int(length))
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = res.readinto(view[got:])
        if not n:
            raise ConnectionError(f"answer ended after {got} of {len(buf)} bytes")
        got += n
    return buf


def _error(status: int, body: bytes) -> ApiError:
    try:
        error = dict(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "HTTP_ERROR", bytes(body[:300]).decode("utf-8", "replace"), {})
    code = str(error.pop("code", "HTTP_ERROR"))
    message = str(error.pop("message", ""))
    return ApiError(status, code, message, error)


# ---- metrics --------------------------------------------------------------------------------

WATCHED_METRICS = (
    "spillway_disk_bytes_total", "spillway_moves_total", "spillway_move_bytes_total",
    "spillway_move_seconds_sum", "spillway_move_seconds_count", "spillway_operation_seconds_sum",
    "spillway_operation_seconds_count", "spillway_http_shed_total", "spillway_disk_op_seconds_sum",
    "spillway_disk_op_seconds_count", "spillway_native_task_seconds_sum", "spillway_native_task_seconds_count",
)


def parse_metrics(text: str) -> dict[str, float]:
    """The watched series of a Prometheus text exposition: {'name{labels}': value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(WATCHED_METRICS):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            continue
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, value in after.items():
        d = value - before.get(key, 0.0)
        if d:
            out[key] = d
    return out


def disk_turns(delta: dict[str, float], in_flight: Optional[int], seconds: float) -> dict:
    """How the disk's turns (tiers.disk.inFlight) were used: the share of them busy over the
    restore, and how long a read held its turn (its service time, queueing excluded)."""
    reads = delta.get('spillway_disk_op_seconds_count{direction="read"}', 0.0)
    held = sum(v for k, v in delta.items() if k.startswith("spillway_disk_op_seconds_sum"))
    read_held = delta.get('spillway_disk_op_seconds_sum{direction="read"}', 0.0)
    return {
        "inFlight": in_flight, "busyShare": held / (in_flight * seconds) if in_flight and seconds > 0 else None,
        "readTurnMs": read_held / reads * 1e3 if reads else None,
    }


def js_thread_waits(delta: dict[str, float]) -> dict:
    """How long the addon's finished tasks (disk reads, copies, kernels) waited for the JS thread
    to take their results: the time a busy JS thread (requests, answers) adds to each."""
    tasks = delta.get('spillway_native_task_seconds_count{phase="returned"}', 0.0)
    waited = delta.get('spillway_native_task_seconds_sum{phase="returned"}', 0.0)
    return {"tasks": int(tasks), "meanMs": waited / tasks * 1e3 if tasks else None, "totalMs": waited * 1e3}


def describe_waits(result: dict) -> str:
    """A restore's disk turns and JS-thread waits, for the log."""
    turns, waits = result.get("diskTurns", {}), result.get("jsThreadWaits", {})
    parts = []
    if turns.get("readTurnMs") is not None:
        parts.append(f"a read's turn {turns['readTurnMs']:.2f} ms, turns busy {turns['busyShare']:.2f}")
    if waits.get("meanMs") is not None:
        parts.append(f"{waits['tasks']} tasks waited {waits['meanMs']:.3f} ms each for the JS thread")
    return ", ".join(parts) or "no disk reads"


def disk_read_bytes(delta: dict[str, float]) -> float:
    return sum(v for k, v in delta.items() if k.startswith("spillway_disk_bytes_total") and 'direction="read"' in k)


# ---- plans and summaries (pure) ---------------------------------------------------------------

def filler_plan(raw_slots: int, quantized_slots: int, blocks_per_sequence: int, margin: int = FILLER_MARGIN) -> dict:
    """How many filler blocks push everything else out of tiers 0 and 1, in which sequences
    (at most the per-sequence limit each) and acquire-many chunks (half of tier 0, at most 1024)."""
    total = raw_slots + quantized_slots + margin
    per_sequence = max(1, blocks_per_sequence)
    sequences = [min(per_sequence, total - s) for s in range(0, total, per_sequence)]
    return {"blocks": total, "sequences": sequences, "chunk": max(1, min(1024, raw_slots // 2))}


def split_contiguous(n: int, parts: int) -> list[tuple[int, int]]:
    """n blocks as `parts` contiguous (start, count) ranges, sizes differing by at most one."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        count = base + (1 if p < extra else 0)
        out.append((start, count))
        start += count
    return out


def context_seed(seed: int, tokens: int) -> int:
    return (seed * 1_000_003 + tokens) * 1_000_033


def block_seed(context: int, index: int) -> int:
    return (context + index) % (1 << 63)


def found_in(entries: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        t = "error" if "error" in e else (e.get("tier") or "unwritten")
        out[t] = out.get(t, 0) + 1
    return out


def fill_rates(report: dict) -> dict:
    """The 4-bit variant's fill rates from a spill-fill report (bench/gpu/spill-fill.ts)."""
    variant = next((v for v in report.get("variants", []) if v.get("variant") == "4bit"), None)
    if variant is None:
        raise ValueError("the fill report has no 4bit variant")
    disk = report.get("disk", {})
    return {
        "device": report.get("device"), "blocks": variant.get("blocks"), "inFlight": variant.get("inFlight"),
        "runs": len(variant.get("repeats", [])) or 1,
        "io": variant.get("io"), "cufileMode": variant.get("cufileMode"),
        "fillLogicalGBps": variant["fill"]["logicalGBps"], "fillPhysicalGBps": variant["fill"]["physicalGBps"],
        "readTurnMs": variant["fill"]["readS"] * variant["inFlight"] / variant["blocks"] * 1e3 if "readS" in variant["fill"] else None,
        "spillLogicalGBps": variant["spill"]["logicalGBps"],
        "diskRead16GBps": disk.get("read16"), "diskRead1GBps": disk.get("read1"),
    }


def fill_beside(command: str, work_dir: str) -> dict:
    """Runs --fill-beside's spill-fill (the 4-bit fill alone) now, with --out FILE: the fill rate of this minute."""
    path = os.path.join(work_dir, "fill-beside.json")
    t0 = time.perf_counter()
    done = subprocess.run([*shlex.split(command), "--out", path], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{command}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    with open(path) as f:
        rates = fill_rates(json.load(f))
    os.remove(path)
    return {k: rates[k] for k in ("fillLogicalGBps", "fillPhysicalGBps", "readTurnMs", "inFlight", "blocks")} | {"seconds": time.perf_counter() - t0}


def vs_fill_beside(runs: list[dict]) -> Optional[float]:
    """The median over restores of each one's logical rate over the fill rate measured just after it."""
    ratios = [r["logicalGBps"] / r["fillBeside"]["fillLogicalGBps"] for r in runs
              if "logicalGBps" in r and r.get("fillBeside", {}).get("fillLogicalGBps")]
    return statistics.median(ratios) if ratios else None


def median_run(runs: list[dict]) -> Optional[dict]:
    ok = [r for r in runs if "seconds" in r]
    if not ok:
        return None
    ordered = sorted(ok, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def compare(lengths: list[dict], prefill_rows: list[dict], fill: Optional[dict], writes: Optional[dict]) -> tuple[list[dict], dict]:
    """Per length: restore vs prefill vs the pipeline's fill rate; and whether the targets are met."""
    by_tokens = {r["tokens"]: r for r in prefill_rows}
    rows = []
    for entry in lengths:
        L = entry["tokens"]
        one = entry.get("restore", {})
        row: dict[str, Any] = {"tokens": L, "blocks": entry["blocks"], "logicalBytes": entry["logicalBytes"]}
        if "seconds" in one:
            row["restoreSeconds"] = one["seconds"]
            row["restoreGBps"] = one["logicalGBps"]
            if fill:
                row["vsFill"] = one["logicalGBps"] / fill["fillLogicalGBps"]
            beside = vs_fill_beside(one.get("runs", []))
            if beside is not None:
                row["vsFillBeside"] = beside
        conc = entry.get("concurrent", {})
        if "seconds" in conc:
            row["concurrentSeconds"] = conc["seconds"]
            row["concurrentGBps"] = conc["logicalGBps"]
            if "seconds" in one:
                row["concurrentVsOne"] = one["seconds"] / conc["seconds"]
        for key in ("httpBatch", "perBlock"):
            v = entry.get(key, {})
            if "seconds" in v:
                row[key + "Seconds"] = v["seconds"]
                row[key + "GBps"] = v["logicalGBps"]
        p = by_tokens.get(L)
        if p:
            row["prefillSeconds"] = p["seconds"]
            row["breakEvenGBps"] = p["breakEvenGBps"]
            if "restoreSeconds" in row:
                row["speedup"] = p["seconds"] / row["restoreSeconds"]
        rows.append(row)

    def verdict(values: list[bool]) -> Optional[bool]:
        return None if not values else all(values)

    t = TARGETS
    targets = {
        "oneClientVsFill": {
            "target": f">= {t['oneClientVsFill']} of the 4-bit logical fill rate from {t['oneClientVsFillFromTokens']} tokens up",
            "values": {r["tokens"]: r["vsFill"] for r in rows if "vsFill" in r and r["tokens"] >= t["oneClientVsFillFromTokens"]},
        },
        "oneClientVsFillBeside": {
            "target": f">= {t['oneClientVsFill']} of the fill rate measured beside each restore (the median of the ratios) from {t['oneClientVsFillFromTokens']} tokens up",
            "values": {r["tokens"]: r["vsFillBeside"] for r in rows if "vsFillBeside" in r and r["tokens"] >= t["oneClientVsFillFromTokens"]},
        },
        "fasterThanRecompute": {
            "target": f"restore faster than prefill from {t['fasterThanRecomputeFromTokens']} tokens up",
            "values": {r["tokens"]: r["speedup"] for r in rows if "speedup" in r and r["tokens"] >= t["fasterThanRecomputeFromTokens"]},
        },
        "concurrentNotSlower": {
            "target": "16 clients never slower than one (one-client seconds / 16-client seconds >= 1)",
            "values": {r["tokens"]: r["concurrentVsOne"] for r in rows if "concurrentVsOne" in r},
        },
        "freeSlotWrites": {
            "target": f"writes into free HBM slots >= {t['freeSlotWritesGBps']} GB/s logical",
            "values": {writes["tokens"]: writes["logicalGBps"]} if writes and "logicalGBps" in writes else {},
        },
    }
    thresholds = {"oneClientVsFill": t["oneClientVsFill"], "oneClientVsFillBeside": t["oneClientVsFill"], "fasterThanRecompute": 1.0, "concurrentNotSlower": 1.0,
                  "freeSlotWrites": t["freeSlotWritesGBps"]}
    for key, v in targets.items():
        v["met"] = verdict([x > thresholds[key] if key == "fasterThanRecompute" else x >= thresholds[key] for x in v["values"].values()])
    return rows, targets


def _f(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    fill = report.get("fillReport")
    lines = []
    dev = report.get("device", "?")
    lines.append(f"Restoring evicted contexts from disk into tier 0 on {dev} "
                 f"({report.get('blockBytes', 0) / 2**20:.0f} MiB blocks of {report.get('tokensPerBlock', '?')} tokens; GB = 1e9 bytes; logical = raw KV bytes):")
    lines.append("")
    if fill:
        runs = f", the median of {fill['runs']} runs" if fill.get("runs", 1) > 1 else ""
        lines.append(f"Pipeline fill rate (spill-fill, 4-bit, {fill.get('blocks')} blocks, {fill.get('inFlight')} in flight, {fill.get('io')}{runs}): "
                     f"{_f(fill['fillLogicalGBps'])} GB/s logical, {_f(fill['fillPhysicalGBps'])} GB/s physical; "
                     f"disk (dd, 16 readers) {_f(fill.get('diskRead16GBps'))} GB/s.")
        lines.append("")
    beside = [r["fillBeside"]["fillLogicalGBps"] for e in report.get("lengths", []) for r in e.get("restore", {}).get("runs", [])
              if r.get("fillBeside", {}).get("fillLogicalGBps")]
    if beside:
        lines.append(f"Fill rates measured beside the restores (the same 4-bit fill, at the end of each round of one-client and concurrent restores; {len(beside)} runs): "
                     f"{_f(min(beside))}-{_f(max(beside))} GB/s logical, median {_f(statistics.median(beside))}.")
        lines.append("")
    mode = report.get("settings", {}).get("clientMode")
    lines.append(f"| tokens | GiB | restore, 1 client: s (GB/s) | vs fill | vs fill beside it | found in | 16 clients{f' ({mode})' if mode else ''}: s (GB/s) | 1-client / 16-client time | HTTP batch: s (GB/s) | per-block acquire: s (GB/s) | prefill s | break-even GB/s | prefill / restore |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_tokens = {e["tokens"]: e for e in report.get("lengths", [])}
    for r in report.get("comparison", []):
        e = by_tokens.get(r["tokens"], {})
        where = e.get("restore", {}).get("foundIn")
        where_text = ", ".join(f"{k} {v}" for k, v in where.items()) if where else "-"

        def pair(s: str, g: str) -> str:
            return f"{_f(r.get(s), 3)} ({_f(r.get(g))})" if s in r else "-"

        lines.append(f"| {r['tokens']} | {r['logicalBytes'] / 2**30:.2f} | {pair('restoreSeconds', 'restoreGBps')} | {_f(r.get('vsFill'))} | {_f(r.get('vsFillBeside'))} | {where_text} | "
                     f"{pair('concurrentSeconds', 'concurrentGBps')} | {_f(r.get('concurrentVsOne'))} | {pair('httpBatchSeconds', 'httpBatchGBps')} | "
                     f"{pair('perBlockSeconds', 'perBlockGBps')} | {_f(r.get('prefillSeconds'), 3)} | {_f(r.get('breakEvenGBps'))} | {_f(r.get('speedup'), 1)} |")
    turns = [(e["tokens"], e["restore"]["diskTurns"]) for e in report.get("lengths", []) if e.get("restore", {}).get("diskTurns", {}).get("readTurnMs")]
    if turns:
        lines.append("")
        bench = f" (spill-fill's reads: {_f(fill['readTurnMs'])} ms)" if fill and fill.get("readTurnMs") else ""
        lines.append(f"Disk turns in the one-client restores ({turns[0][1]['inFlight']} at once): "
                     + "; ".join(f"{t}: {_f(d['busyShare'])} of their time busy, a read {_f(d['readTurnMs'])} ms" for t, d in turns) + f"{bench}.")
    w = report.get("freeSlotWrites")
    if w and "logicalGBps" in w:
        lines.append("")
        lines.append(f"Writes into free HBM slots, {w['tokens']} tokens ({w['blocks']} blocks) into an empty tier 0: "
                     f"{_f(w['logicalGBps'])} GB/s logical (acquire-many {_f(w['acquireSeconds'], 4)} s + release-many written {_f(w['releaseSeconds'], 4)} s; median of {len(w['runs'])}).")
    writes = [(e["tokens"], e["write"]) for e in report.get("lengths", []) if "logicalGBps" in e.get("write", {})]
    if writes:
        lines.append("Writing each context A (the same into free slots): " + "; ".join(f"{t}: {_f(x['logicalGBps'])} GB/s" for t, x in writes) + ".")
    p = report.get("prefill")
    if p and p.get("attention"):
        lines.append("")
        rates = ", ".join("%d: %.0f TFLOP/s" % (r["tokens"], r["tflops"]) for r in p.get("rows", []))
        lines.append(f"Prefill: Llama-3-8B-shaped bf16 model, random weights, chunks of {p.get('chunk')} tokens, attention {p.get('attention')}; {rates}.")
    targets = report.get("targets")
    if targets:
        lines.append("")
        lines.append("| target | values | met |")
        lines.append("| --- | --- | --- |")
        for key, t in targets.items():
            values = ", ".join(f"{k}: {v:.2f}" for k, v in t["values"].items()) or "-"
            met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {values} | {met} |")
    checks = report.get("checks", {})
    lines.append("")
    lines.append(f"Blocks checked: {checks.get('blocks', 0)} ({checks.get('exact', 0)} bit-exact, {checks.get('lossy', 0)} within the 4-bit bound, "
                 f"max relative error {_f(checks.get('maxRelativeError'), 4)}), wrong: {checks.get('wrong', 0)}; errors: {len(report.get('errors', []))}.")
    return "\n".join(lines)


# ---- the GPU side --------------------------------------------------------------------------

def _cudart(torch):
    """libcudart for ctypes: the one this process loaded, else any the loader finds."""
    import ctypes
    import ctypes.util
    torch.cuda.init()
    candidates = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if line.strip() else ""
                if "libcudart" in path and path.startswith("/") and path not in candidates:
                    candidates.append(path)
    except OSError:
        pass
    found = ctypes.util.find_library("cudart")
    candidates += [c for c in (found, "libcudart.so.13", "libcudart.so.12", "libcudart.so") if c]
    for c in candidates:
        try:
            return ctypes.CDLL(c)
        except OSError:
            continue
    raise RuntimeError("no CuPy and no libcudart to open the CUDA IPC handle with")


class PoolMap:
    """Tier 0 mapped once through its CUDA IPC handle: rows[slot] is a slot's block bytes."""

    def __init__(self, torch, info: dict, device: int):
        self.torch = torch
        self.info = info
        self.device = torch.device("cuda", device)
        self.slots, self.slot_bytes = info["slots"], info["slotBytes"]
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        self.dtype = dtypes[info["dtype"]]
        self.block_bytes = info["elementBytes"] * math.prod(info["shape"])
        nbytes = self.slots * self.slot_bytes
        handle = base64.b64decode(info["handle"])
        self._close: Callable[[], None] = lambda: None
        try:
            import cupy
        except ImportError:
            cupy = None
        if cupy is not None:
            with cupy.cuda.Device(device):
                ptr = cupy.cuda.runtime.ipcOpenMemHandle(handle)
                memory = cupy.cuda.UnownedMemory(ptr, nbytes, self, device)
                array = cupy.ndarray((nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(memory, 0))
            self.bytes = torch.from_dlpack(array)
            self.how = "cupy"

            def close() -> None:
                with cupy.cuda.Device(device):
                    cupy.cuda.runtime.ipcCloseMemHandle(ptr)
            self._close = close
        else:
            import ctypes

            class Handle(ctypes.Structure):
                _fields_ = [("reserved", ctypes.c_char * 64)]

            lib = _cudart(torch)
            torch.cuda.set_device(device)
            h = Handle()
            ctypes.memmove(ctypes.addressof(h), handle, min(64, len(handle)))
            ptr = ctypes.c_void_p()
            rc = lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), h, ctypes.c_uint(1))  # cudaIpcMemLazyEnablePeerAccess
            if rc != 0:
                raise RuntimeError(f"cudaIpcOpenMemHandle failed: cudaError {rc}")

            class Interface:
                __cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr.value, False), "version": 3, "strides": None}

            self.bytes = torch.as_tensor(Interface(), device=self.device)
            self.how = "ctypes"
            self._close = lambda: lib.cudaIpcCloseMemHandle(ptr)
        self.rows = self.bytes.view(self.slots, self.slot_bytes)[:, : self.block_bytes]

    def slot(self, s: int):
        """Slot s as a flat tensor of the block's dtype, in place."""
        return self.rows[s].view(self.dtype)

    def gather(self, slots: list[int]):
        idx = self.torch.tensor(slots, dtype=self.torch.long, device=self.device)
        return self.rows.index_select(0, idx)

    def close(self) -> None:
        del self.rows, self.bytes
        self._close()


class Content:
    """Deterministic blocks: block i of context c is N(0, 1) in the block dtype from a
    generator seeded with block_seed(c, i), drawn straight into its destination."""

    def __init__(self, torch, device, dtype, block_bytes: int):
        self.torch = torch
        self.gen = torch.Generator(device=device)
        self.dtype = dtype
        self.elems = block_bytes // torch.empty((), dtype=dtype).element_size()
        self.device = device

    def draw(self, out, context: int, index: int) -> None:
        self.gen.manual_seed(block_seed(context, index))
        out.normal_(generator=self.gen)


class Checks:
    """Totals over every block checked in the run."""

    def __init__(self) -> None:
        self.blocks = self.exact = self.lossy = self.wrong = 0
        self.max_err = 0.0

    def add(self, c: dict) -> None:
        self.blocks += c["blocks"]
        self.exact += c["exact"]
        self.lossy += c["lossy"]
        self.wrong += c["wrong"]
        self.max_err = max(self.max_err, c["maxRelativeError"])

    def summary(self) -> dict:
        return {"blocks": self.blocks, "exact": self.exact, "lossy": self.lossy, "wrong": self.wrong, "maxRelativeError": self.max_err}


def verify(torch, content: Content, context: int, entries: list[dict], fetch: Callable[[list[dict]], Any]) -> dict:
    """Checks each entry's block (fetch(part) -> [k, blockBytes] uint8 on the GPU) against its
    generator: bit-exact unless the entry is lossy, else within the 4-bit bound."""
    dtype = content.dtype
    as_int = torch.int16 if torch.empty((), dtype=dtype).element_size() == 2 else torch.int32
    ref = torch.empty(VERIFY_CHUNK, content.elems, dtype=dtype, device=content.device)
    exact = lossy = 0
    errors: list[float] = []
    failures: list[dict] = []
    answered_errors = [e for e in entries if "error" in e]
    for e in answered_errors[:5]:
        failures.append({"index": e.get("index"), "error": e["error"]})
    good = [e for e in entries if "error" not in e]
    for start in range(0, len(good), VERIFY_CHUNK):
        part = good[start:start + VERIFY_CHUNK]
        k = len(part)
        got = fetch(part).view(dtype).view(k, content.elems)
        for j, e in enumerate(part):
            content.draw(ref[j], context, e["index"])
        r = ref[:k]
        same = (got.view(as_int) == r.view(as_int)).all(dim=1).tolist()
        a, b = r.float(), got.float()
        rel = (((a - b) ** 2).sum(dim=1) / (a * a).sum(dim=1)).tolist()
        del a, b, got
        for j, e in enumerate(part):
            if e.get("lossy"):
                if math.isfinite(rel[j]) and rel[j] < FOUR_BIT_BOUND:
                    lossy += 1
                    errors.append(rel[j])
                else:
                    failures.append({"index": e["index"], "tier": e.get("tier"), "lossy": True, "relativeError": rel[j]})
            elif same[j]:
                exact += 1
            else:
                failures.append({"index": e["index"], "tier": e.get("tier"), "lossy": False, "relativeError": rel[j], "why": "not bit-exact"})
    wrong = len(entries) - exact - lossy
    return {
        "blocks": len(entries), "exact": exact, "lossy": lossy, "wrong": wrong,
        "maxRelativeError": max(errors, default=0.0), "meanRelativeError": statistics.fmean(errors) if errors else 0.0,
        "failures": failures[:5], "ok": wrong == 0,
    }


class ClientAnswer(NamedTuple):
    """One concurrent client's acquire-many: its range's first index, when its answer came (or
    its error), and the 503s it retried."""
    start: int
    finished: float
    answer: Optional[dict]
    error: Optional[str]
    shed: int


def _acquire_range(api: Api, lease: str, seq: str, start: int, count: int) -> ClientAnswer:
    shed = api.shed
    try:
        answer, error = api.acquire_many(lease, seq, start, count), None
    except Exception as err:  # noqa: BLE001 - reported by the caller
        answer, error = None, f"{type(err).__name__}: {err}"
    return ClientAnswer(start, time.perf_counter(), answer, error, api.shed - shed)


def _client_process(url: str, token: Optional[str], tasks: Any, results: Any, barrier: Any) -> None:
    """One concurrent client: its own interpreter and connection. Each task (lease, sequence,
    start, count) is sent at the common start (the barrier); None, or a broken start, ends it."""
    api = Api(url, token)
    api.status()  # the connection is open before the first start
    while (task := tasks.get()) is not None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            break
        lease, seq, start, count = task
        if lease is None:  # fewer ranges than processes: this one only keeps the start
            results.put(ClientAnswer(-1, 0.0, None, None, 0))
            continue
        results.put(_acquire_range(api, lease, seq, start, count))
    api.close()


class ClientProcesses:
    """The concurrent clients as processes, each with its own interpreter, so that their requests
    go out and their answers are read at once, as an engine's workers would send them; threads of
    one interpreter take turns at its lock, which holds back the last requests by a millisecond
    or more, a share of a short restore's time. Started once, used for every concurrent restore;
    time.perf_counter is the system's monotonic clock, the same in every process."""

    def __init__(self, url: str, token: Optional[str], count: int):
        ctx = multiprocessing.get_context("spawn")  # no copy of the parent's CUDA state
        self.count = count
        self.barrier = ctx.Barrier(count + 1, timeout=120)
        self.tasks = [ctx.SimpleQueue() for _ in range(count)]
        self.results = ctx.SimpleQueue()
        self.processes = [ctx.Process(target=_client_process, args=(url, token, q, self.results, self.barrier), daemon=True) for q in self.tasks]
        for proc in self.processes:
            proc.start()

    def run(self, leases: list[str], seq: str, ranges: list[tuple[int, int]]) -> tuple[float, list[ClientAnswer]]:
        """Acquires each range of the sequence under its lease, each from its own process, all at
        once; returns the start and each range's answer, in range order."""
        if len(ranges) > self.count:
            raise ValueError(f"{len(ranges)} ranges for {self.count} client processes")
        for i, q in enumerate(self.tasks):
            q.put((leases[i], seq, *ranges[i]) if i < len(ranges) else (None, seq, -1, 0))
        self.barrier.wait()
        t0 = time.perf_counter()
        done = sorted(self.results.get() for _ in self.tasks)
        return t0, [d for d in done if d.start >= 0]

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for proc in self.processes:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


class Bench:
    def __init__(self, args: argparse.Namespace, torch, api: Api, pool: PoolMap, status: dict):
        self.args = args
        self.torch = torch
        self.api = api
        self.pool = pool
        self.device = pool.device
        self.tpb = pool.info["tokensPerBlock"]
        self.block_bytes = pool.block_bytes
        self.content = Content(torch, self.device, pool.dtype, pool.block_bytes)
        self.checks = Checks()
        self.errors: list[str] = []
        self.deadline = time.perf_counter() + args.deadline_s if args.deadline_s else math.inf
        self.skipped: list[str] = []
        self.lease = api.create_lease("restore-bench", args.lease_ttl_ms)
        self.max_batch_blocks = max(1, status["config"]["server"]["maxBatchBytes"] // status["capacity"]["rawBlockBytes"])
        self.disk_in_flight = status["config"].get("tiers", {}).get("disk", {}).get("inFlight")
        self.client_processes: Optional[ClientProcesses] = None  # the concurrent clients, started on first use
        g = torch.Generator(device=self.device).manual_seed(args.seed + 99)
        self.filler = torch.empty(FILLER_SOURCES, self.content.elems, dtype=pool.dtype, device=self.device).normal_(generator=g).view(torch.uint8)

    # ---- common parts ----------------------------------------------------------------

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def renew_lease(self) -> None:
        """After a failed step: end the lease (releasing whatever it held) and take a new one."""
        try:
            self.api.end_lease(self.lease)
        except Exception as err:  # noqa: BLE001
            log(f"  ending the lease failed: {err}")
        self.lease = self.api.create_lease("restore-bench", self.args.lease_ttl_ms)

    def step(self, name: str, fn: Callable[[], dict]) -> dict:
        """Runs one measurement; a failure is recorded, the lease renewed, and the run goes on."""
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - the report says what failed; the rest still runs
            message = f"{name}: {type(err).__name__}: {err}"
            log(f"  FAILED {message}")
            self.errors.append(message)
            try:
                self.renew_lease()
            except Exception as again:  # noqa: BLE001
                self.errors.append(f"{name}: renewing the lease: {again}")
            return {"error": message}

    def late(self, what: str) -> bool:
        """Past --deadline-s: the optional steps are skipped (and listed), the core ones run."""
        if time.perf_counter() < self.deadline:
            return False
        self.skipped.append(what)
        log(f"  skipped (time budget): {what}")
        return True

    def tiers_used(self) -> dict:
        return {t["name"]: t["used"] for t in self.api.status()["stats"]["tiers"]}

    def check(self, label: str, context: int, entries: list[dict], fetch: Callable) -> dict:
        c = verify(self.torch, self.content, context, entries, fetch)
        self.checks.add(c)
        if not c["ok"]:
            message = f"{label}: {c['wrong']} of {c['blocks']} blocks wrong: {c['failures']}"
            log(f"  WRONG {message}")
            self.errors.append(message)
        return c

    def slot_fetch(self, part: list[dict]):
        return self.pool.gather([e["slot"] for e in part])

    def release(self, lease: str, entries: list[dict], written: bool, api: Optional[Api] = None) -> float:
        held = [{"blockId": e["blockId"], "written": written} for e in entries if "blockId" in e and "error" not in e]
        if not held:
            return 0.0
        t0 = time.perf_counter()
        answer = (api or self.api).release_many(lease, held)
        seconds = time.perf_counter() - t0
        bad = [b for b in answer.get("blocks", []) if "error" in b]
        if bad:
            raise RuntimeError(f"release-many: {len(bad)} of {len(held)} failed, first {bad[0]}")
        return seconds

    # ---- the steps ---------------------------------------------------------------------

    def acquire_pieces(self, lease: str, seq: str, n: int, refused: list[dict]):
        """acquire-many of blocks 0 .. n-1 in one request, or in pieces of what the server says
        fits where it refuses more; yields (seconds, answer) per request. The caller must
        release a piece before the next is asked for."""
        pieces = [(0, n)]
        while pieces:
            start, count = pieces.pop(0)
            t0 = time.perf_counter()
            try:
                answer = self.api.acquire_many(lease, seq, start, count)
            except ApiError as err:
                fit = err.details.get("max")
                if 400 <= err.status < 500 and isinstance(fit, int) and 0 < fit < count:
                    refused.append({"requested": count, "max": fit, "message": str(err)})
                    pieces[:0] = [(s, min(fit, start + count - s)) for s in range(start, start + count, fit)]
                    continue
                raise
            yield time.perf_counter() - t0, answer

    def write_context(self, seq: str, n: int, context: int) -> dict:
        """Acquire-many of n unwritten blocks, each drawn in its slot, release-many written."""
        used = self.tiers_used()
        acquire_s = fill_s = release_s = 0.0
        answers: list[dict] = []
        refused: list[dict] = []
        for seconds, answer in self.acquire_pieces(self.lease, seq, n, refused):
            acquire_s += seconds
            entries = answer["blocks"]
            answers.append({k: v for k, v in answer.items() if k != "blocks"})
            errors = [e for e in entries if "error" in e]
            if errors:
                raise RuntimeError(f"acquire-many of new blocks: {len(errors)} failed, first {errors[0]}")
            if any(e.get("written") for e in entries):
                raise RuntimeError("acquire-many of new blocks answered written blocks")
            t1 = time.perf_counter()
            for e in entries:
                self.content.draw(self.pool.slot(e["slot"]), context, e["index"])
            self.sync()  # the writes are done before the slots become the blocks
            fill_s += time.perf_counter() - t1
            release_s += self.release(self.lease, entries, True)
        return {
            "tiersUsedBefore": used, "acquireSeconds": acquire_s, "fillSeconds": fill_s, "releaseSeconds": release_s,
            "seconds": acquire_s + release_s, "logicalGBps": n * self.block_bytes / (acquire_s + release_s) / GB,
            "requests": len(answers), "refused": refused, "answers": answers,
        }

    def evict(self) -> dict:
        """Filler through tiers 0 and 1 until nothing older is left there, then freed."""
        status = self.api.status()
        caps = {t["name"]: t["slots"] for t in status["capacity"]["tiers"]}
        plan = filler_plan(caps["raw"], caps["quantized"], status["limits"]["maxTokensPerSequence"] // self.tpb)
        t0 = time.perf_counter()
        seqs = []
        retried = 0
        try:
            for size in plan["sequences"]:
                seq = self.api.create_sequence()
                seqs.append(seq)
                self.api.allocate(seq, size)
                for start in range(0, size, plan["chunk"]):
                    count = min(plan["chunk"], size - start)
                    entries = self.api.acquire_many(self.lease, seq, start, count)["blocks"]
                    for attempt in range(4):
                        held = [e for e in entries if "error" not in e]
                        for e in held:
                            self.pool.rows[e["slot"]].copy_(self.filler[e["index"] % FILLER_SOURCES])
                        self.sync()
                        self.release(self.lease, held, True)
                        failed = [e for e in entries if "error" in e]
                        if not failed:
                            break
                        # Evictions all busy at once (TIER_BUSY): those blocks again, once the rest are in.
                        if attempt == 3 or any(e["error"].get("code") != "TIER_BUSY" for e in failed):
                            raise RuntimeError(f"filler acquire-many: {len(failed)} failed, first {failed[0]}")
                        retried += len(failed)
                        entries = self.api.acquire_indices(self.lease, seq, [e["index"] for e in failed])["blocks"]
        finally:
            for seq in seqs:
                self.api.free_sequence(seq)
        seconds = time.perf_counter() - t0
        after = self.tiers_used()
        return {"fillerBlocks": plan["blocks"], "sequences": len(plan["sequences"]), "chunk": plan["chunk"],
                "retriedBusy": retried, "seconds": seconds, "tiersUsedAfter": after}

    def restore_one(self, seq: str, n: int, context: int) -> dict:
        """acquire-many of all n blocks by one client (in pieces only where the server refuses more)."""
        seconds = 0.0
        entries_all: list[dict] = []
        answers: list[dict] = []
        refused: list[dict] = []
        checks: list[dict] = []
        shed0 = self.api.shed
        m0 = self.api.metrics()
        for took, answer in self.acquire_pieces(self.lease, seq, n, refused):
            seconds += took
            entries = answer["blocks"]
            answers.append({k: v for k, v in answer.items() if k != "blocks"})
            entries_all += entries
            checks.append(self.check("restore", context, entries, self.slot_fetch))
            self.release(self.lease, entries, False)
        m1 = self.api.metrics()  # the checks and releases between pieces move nothing on disk
        return self._result(n, seconds, entries_all, m0, m1, len(answers), shed=self.api.shed - shed0,
                            answers=answers, refused=refused, check=_merge_checks(checks))

    def restore_concurrent(self, seq: str, n: int, context: int, clients: int) -> dict:
        ranges = split_contiguous(n, clients)
        apis = [self.api.clone() for _ in ranges]
        leases: list[str] = []
        try:
            for i, a in enumerate(apis):
                leases.append(a.create_lease(f"restore-client-{i}", self.args.lease_ttl_ms))  # also opens its connection
            m0 = self.api.metrics()
            if self.args.client_threads:
                t0, done = self._acquire_from_threads(apis, leases, seq, ranges)
            else:
                if self.client_processes is None:
                    self.client_processes = ClientProcesses(self.args.url, self.args.token, clients)
                try:
                    t0, done = self.client_processes.run(leases, seq, ranges)
                except BaseException:
                    # A broken start leaves the processes unusable: the next restore starts new ones.
                    self.client_processes.close()
                    self.client_processes = None
                    raise
            m1 = self.api.metrics()
            failed = [d.error for d in done if d.error is not None]
            if failed or len(done) < len(ranges):
                raise RuntimeError(f"{len(ranges) - len(done) + len(failed)} of {len(ranges)} clients failed, first: {failed[0] if failed else 'no answer'}")
            seconds = max(d.finished for d in done) - t0
            entries = [e for d in done for e in d.answer["blocks"]]
            check = self.check("restore, concurrent", context, entries, self.slot_fetch)
            for i, d in enumerate(done):
                self.release(leases[i], d.answer["blocks"], False, apis[i])
            per_client = sorted(d.finished - t0 for d in done)
            return self._result(n, seconds, entries, m0, m1, len(ranges), shed=sum(d.shed for d in done),
                                answers=[{k: v for k, v in d.answer.items() if k != "blocks"} for d in done],
                                check=check, clients=len(ranges), clientMode="threads" if self.args.client_threads else "processes",
                                clientSeconds={"min": per_client[0], "median": statistics.median(per_client), "max": per_client[-1]})
        finally:
            for a, lease in zip(apis, leases):
                try:
                    a.end_lease(lease)
                except Exception:  # noqa: BLE001
                    pass
            for a in apis:
                a.close()

    @staticmethod
    def _acquire_from_threads(apis: list[Api], leases: list[str], seq: str, ranges: list[tuple[int, int]]) -> tuple[float, list[ClientAnswer]]:
        """ClientProcesses.run's answer from threads of this interpreter (--client-threads); a
        thread that got no answer leaves its range out, which the caller counts as failed."""
        done: list[Optional[ClientAnswer]] = [None] * len(ranges)
        barrier = threading.Barrier(len(ranges) + 1)

        def work(i: int) -> None:
            barrier.wait()
            done[i] = _acquire_range(apis[i], leases[i], seq, *ranges[i])

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(ranges))]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return t0, [d for d in done if d is not None]

    def restore_http(self, seq: str, n: int, context: int) -> dict:
        """POST .../blocks/read, msgpack answers of at most maxBatchBytes, into GPU memory."""
        torch = self.torch
        dest = torch.empty(n, self.block_bytes, dtype=torch.uint8, device=self.device)
        entries: list[dict] = []
        shed0 = self.api.shed
        m0 = self.api.metrics()
        requests = 0
        t0 = time.perf_counter()
        for start in range(0, n, self.max_batch_blocks):
            indices = list(range(start, min(n, start + self.max_batch_blocks)))
            _, body = self.api.read_batch(seq, indices)
            requests += 1
            for b in unpackb(body)["blocks"]:
                data = b["data"]
                if len(data) != self.block_bytes:
                    raise RuntimeError(f"block {b['index']}: {len(data)} bytes, expected {self.block_bytes} (format {b.get('format')})")
                dest[b["index"]].copy_(torch.frombuffer(data, dtype=torch.uint8))
                entries.append({"index": b["index"], "tier": b.get("tier"), "lossy": b.get("lossy"), "promoted": b.get("promoted"), "format": b.get("format")})
            del body
        self.sync()
        seconds = time.perf_counter() - t0
        m1 = self.api.metrics()

        def fetch(part: list[dict]):
            return dest.index_select(0, torch.tensor([e["index"] for e in part], dtype=torch.long, device=self.device))

        check = self.check("restore, HTTP batch", context, entries, fetch)
        del dest
        return self._result(n, seconds, entries, m0, m1, requests, shed=self.api.shed - shed0, check=check,
                            blocksPerRequest=self.max_batch_blocks)

    def restore_per_block(self, seq: str, n: int, context: int) -> dict:
        shed0 = self.api.shed
        m0 = self.api.metrics()
        t0 = time.perf_counter()
        entries = [{"index": i, **self.api.acquire(self.lease, seq, i)} for i in range(n)]
        seconds = time.perf_counter() - t0
        m1 = self.api.metrics()
        check = self.check("restore, per-block acquire", context, entries, self.slot_fetch)
        self.release(self.lease, entries, False)
        return self._result(n, seconds, entries, m0, m1, n, shed=self.api.shed - shed0, check=check)

    def _result(self, n: int, seconds: float, entries: list[dict], m0: dict, m1: dict, requests: int, **extra: Any) -> dict:
        delta = metrics_delta(m0, m1)
        physical = disk_read_bytes(delta)
        return {
            "seconds": seconds, "logicalBytes": n * self.block_bytes, "logicalGBps": n * self.block_bytes / seconds / GB,
            "physicalReadBytes": physical, "physicalGBps": physical / seconds / GB, "requests": requests,
            "foundIn": found_in(entries), "promoted": sum(1 for e in entries if e.get("promoted")),
            "diskTurns": disk_turns(delta, self.disk_in_flight, seconds), "jsThreadWaits": js_thread_waits(delta), **extra,
            "metrics": delta,
        }

    def length(self, tokens: int) -> dict:
        args = self.args
        n = tokens // self.tpb
        context = context_seed(args.seed, tokens)
        out: dict[str, Any] = {"tokens": tokens, "blocks": n, "logicalBytes": n * self.block_bytes}
        log(f"{tokens} tokens ({n} blocks, {n * self.block_bytes / 2**30:.2f} GiB):")
        seq = self.api.create_sequence()
        try:
            self.api.allocate(seq, n)
            out["write"] = self.step("write", lambda: self.write_context(seq, n, context))
            if "error" in out["write"]:
                return out
            log(f"  wrote A: {_f(out['write'].get('logicalGBps'))} GB/s (acquire + release; tiers used before {out['write'].get('tiersUsedBefore')})")
            evictions: list[dict] = []

            def evicted(label: str) -> bool:
                e = self.step(f"evict before {label}", self.evict)
                e["before"] = label
                evictions.append(e)
                if "error" in e:
                    return False
                log(f"  evicted ({e['fillerBlocks']} filler blocks, {e['seconds']:.2f} s): tiers used {e['tiersUsedAfter']}")
                return True

            # One client and --clients clients take turns, each after its own eviction and the
            # one going first alternating, so that drift in the disk's rate over the run falls on
            # both alike; medians count. The fill set beside the round's one-client restore ends
            # the round: its writes may still slow the disk for the restore after it, which is
            # then each kind in turn.
            runs: list[dict] = []
            concurrent_runs: list[dict] = []

            def one_client(r: int) -> None:
                if not evicted(f"restore {r + 1}"):
                    return
                res = self.step("restore", lambda: self.restore_one(seq, n, context))
                runs.append(res)
                if "seconds" in res:
                    log(f"  restore, 1 client: {res['seconds']:.3f} s, {res['logicalGBps']:.2f} GB/s logical, "
                        f"{res['physicalGBps']:.2f} physical; found in {res['foundIn']}; {describe_waits(res)}")

            def fill_after(r: int) -> None:
                res = runs[-1] if runs else {}
                if not args.fill_beside or "seconds" not in res or "fillBeside" in res or self.late(f"{tokens} tokens: fill beside restore {r + 1}"):
                    return
                res["fillBeside"] = self.step("fill beside", lambda: fill_beside(args.fill_beside, args.work_dir))
                if "fillLogicalGBps" in res["fillBeside"]:
                    log(f"  fill beside the one-client restore: {res['fillBeside']['fillLogicalGBps']:.2f} GB/s logical "
                        f"({res['logicalGBps'] / res['fillBeside']['fillLogicalGBps']:.2f} of it)")

            def clients(r: int) -> None:
                if args.clients <= 1 or self.late(f"{tokens} tokens: concurrent {r + 1}") or not evicted(f"concurrent {r + 1}"):
                    return
                c = self.step("restore, concurrent", lambda: self.restore_concurrent(seq, n, context, args.clients))
                concurrent_runs.append(c)
                if "seconds" in c:
                    log(f"  restore, {c['clients']} clients: {c['seconds']:.3f} s, {c['logicalGBps']:.2f} GB/s; found in {c['foundIn']}; {describe_waits(c)}")

            for r in range(args.repeats):
                if r > 0 and self.late(f"{tokens} tokens: restore {r + 1}"):
                    break
                for kind in (one_client, clients, fill_after) if r % 2 == 0 else (clients, one_client, fill_after):
                    kind(r)
            best = median_run(runs)
            out["restore"] = {**best, "runs": runs} if best else {"runs": runs, "error": "no restore completed"}
            if concurrent_runs:
                best_c = median_run(concurrent_runs)
                out["concurrent"] = {**best_c, "runs": concurrent_runs} if best_c else {"runs": concurrent_runs, "error": "no concurrent restore completed"}
            if tokens in args.http_lengths and not self.late(f"{tokens} tokens: HTTP batch") and evicted("HTTP batch"):
                out["httpBatch"] = self.step("restore, HTTP batch", lambda: self.restore_http(seq, n, context))
                h = out["httpBatch"]
                if "seconds" in h:
                    log(f"  restore, HTTP batch: {h['seconds']:.3f} s, {h['logicalGBps']:.2f} GB/s ({h['requests']} requests)")
            if tokens in args.per_block_lengths and not self.late(f"{tokens} tokens: per-block acquire") and evicted("per-block acquire"):
                out["perBlock"] = self.step("restore, per-block acquire", lambda: self.restore_per_block(seq, n, context))
                p = out["perBlock"]
                if "seconds" in p:
                    log(f"  restore, per-block acquire: {p['seconds']:.3f} s, {p['logicalGBps']:.2f} GB/s")
            out["evictions"] = evictions
        finally:
            self.api.free_sequence(seq)
        return out

    def free_slot_writes(self, tokens: int, repeats: int) -> dict:
        n = tokens // self.tpb
        status = self.api.status()
        tier0 = next(t for t in status["stats"]["tiers"] if t["name"] == "raw")
        if tier0["free"] < n:
            return {"tokens": tokens, "blocks": n, "skipped": f"tier 0 has {tier0['free']} free slots, fewer than {n}"}
        runs = []
        for _ in range(repeats):
            seq = self.api.create_sequence()
            try:
                self.api.allocate(seq, n)
                used = self.tiers_used()
                t0 = time.perf_counter()
                entries = self.api.acquire_many(self.lease, seq, 0, n)["blocks"]
                t1 = time.perf_counter()
                errors = [e for e in entries if "error" in e]
                if errors:
                    raise RuntimeError(f"acquire-many: {len(errors)} failed, first {errors[0]}")
                for j, e in enumerate(entries):
                    self.pool.rows[e["slot"]].copy_(self.filler[j % FILLER_SOURCES])
                self.sync()
                t2 = time.perf_counter()
                release_s = self.release(self.lease, entries, True)
                runs.append({"tiersUsedBefore": used, "acquireSeconds": t1 - t0, "fillSeconds": t2 - t1, "releaseSeconds": release_s,
                             "seconds": t1 - t0 + release_s, "logicalGBps": n * self.block_bytes / (t1 - t0 + release_s) / GB})
            finally:
                self.api.free_sequence(seq)
        best = median_run(runs)
        return {"tokens": tokens, "blocks": n, **(best or {}), "runs": runs}


def _merge_checks(checks: list[dict]) -> dict:
    if len(checks) == 1:
        return checks[0]
    return {
        "blocks": sum(c["blocks"] for c in checks), "exact": sum(c["exact"] for c in checks), "lossy": sum(c["lossy"] for c in checks),
        "wrong": sum(c["wrong"] for c in checks), "maxRelativeError": max(c["maxRelativeError"] for c in checks),
        "failures": [f for c in checks for f in c["failures"]][:5], "ok": all(c["ok"] for c in checks),
    }


# ---- the run --------------------------------------------------------------------------------

def parse_lengths(text: str) -> list[int]:
    out = []
    for part in text.replace(",", " ").split():
        part = part.strip().lower()
        out.append(int(part[:-1]) * 1024 if part.endswith("k") else int(part))
    return out


def write_json(path: Optional[str], report: dict) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def summarize_server(status: dict, pool: dict) -> dict:
    cfg = status.get("config", {})
    return {
        "backend": status["backend"]["name"],
        "paths": {tier: re.sub(r" on /\S+:", ":", str(p)) for tier, p in (status["backend"].get("paths") or {}).items()},
        "disk": {k: v for k, v in status["backend"].get("disk", {}).items() if k != "path"},
        "tiers": status["capacity"]["tiers"],
        "rawBlockBytes": status["capacity"]["rawBlockBytes"], "quantizedBlockBytes": status["capacity"]["quantizedBlockBytes"],
        "limits": status.get("limits"),
        "quantization": cfg.get("quantization"),
        "server": {k: v for k, v in cfg.get("server", {}).items() if k in ("maxBatchBytes", "maxJsonBytes", "maxBodyBytesInFlight", "maxDiskQueue", "maxEventLoopDelayMs")},
        "eviction": cfg.get("eviction"),
        "pool": {k: pool[k] for k in ("slots", "slotBytes", "dtype", "shape", "device") if k in pool},
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8420")
    parser.add_argument("--token", default=os.environ.get("SPILLWAY_TOKEN"), help="bearer token (default $SPILLWAY_TOKEN)")
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)), help="context lengths in tokens (comma- or space-separated; 32k style accepted)")
    parser.add_argument("--repeats", type=int, default=2, help="one-client and concurrent restores per length, taking turns, each after its own eviction; the medians count")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the concurrent restore (1 skips it)")
    parser.add_argument("--client-threads", action="store_true",
                        help="send the concurrent clients' requests from threads of this process instead of a process each")
    parser.add_argument("--http-lengths", default="all", help="lengths that also restore through the HTTP batch read ('all', 'none' or a list)")
    parser.add_argument("--per-block-lengths", default=",".join(map(str, DEFAULT_PER_BLOCK_LENGTHS)), help="lengths that also restore with one acquire per block ('none' for none)")
    parser.add_argument("--write-length", type=int, default=32768, help="tokens written into an empty tier 0 for the free-slot write rate (0 skips)")
    parser.add_argument("--write-repeats", type=int, default=3)
    parser.add_argument("--fill-report", help="spill-fill JSON (node dist/bench/gpu/spill-fill.js --out FILE) of the same run")
    parser.add_argument("--fill-beside", help="a spill-fill command (node dist/bench/gpu/spill-fill.js --only 4bit ...) run at the end of each round of restores, given --out FILE; each one-client restore is also set against the fill of its round")
    parser.add_argument("--work-dir", default=".", help="where --fill-beside's report is written for a moment")
    parser.add_argument("--no-prefill", action="store_true", help="skip the prefill comparison")
    parser.add_argument("--prefill-report", help="use this prefill.py --json report instead of running the prefill here")
    parser.add_argument("--prefill-chunk", type=int, default=8192)
    parser.add_argument("--prefill-runs", type=int, help="prefill runs per length (default: prefill.py's)")
    parser.add_argument("--device", type=int, default=0, help="the CUDA device the server's tier 0 is on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-ttl-ms", type=int, default=600_000)
    parser.add_argument("--deadline-s", type=float, help="after this many seconds, skip the optional restores (repeats, 16 clients, HTTP batch, per-block) and go on")
    parser.add_argument("--json", help="write the report here (after every length, and at the end)")
    parser.add_argument("--markdown", help="write the markdown report here too (default: beside --json, .md)")
    parser.add_argument("--self-test", action="store_true", help="check the parts that need neither torch nor a server, and exit")
    args = parser.parse_args(argv)

    if args.self_test:
        return self_test()

    lengths = parse_lengths(args.lengths)
    args.http_lengths = set(lengths) if args.http_lengths == "all" else set() if args.http_lengths == "none" else set(parse_lengths(args.http_lengths))
    args.per_block_lengths = set() if args.per_block_lengths == "none" else set(parse_lengths(args.per_block_lengths))
    markdown_path = args.markdown or (args.json[:-5] + ".md" if args.json and args.json.endswith(".json") else None)

    try:
        import torch
    except ImportError as err:
        log(f"restore.py needs torch: {err}")
        return 2
    if not torch.cuda.is_available():
        log("restore.py needs a CUDA GPU (the one the server's tier 0 is on)")
        return 2

    started = time.perf_counter()
    api = Api(args.url, token=args.token)
    status = api.status()
    if status["backend"]["name"] != "gpu":
        log(f"the server runs the {status['backend']['name']} backend: zero-copy needs the GPU backend")
        return 2
    torch.cuda.set_device(args.device)
    info = api.pool()
    pool = PoolMap(torch, info, args.device)
    tpb = info["tokensPerBlock"]
    bad = [L for L in lengths if L % tpb]
    if bad:
        log(f"lengths must be multiples of {tpb} tokens: {bad}")
        return 2

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device), "torch": torch.__version__, "ipc": pool.how,
        "tokensPerBlock": tpb, "blockBytes": pool.block_bytes, "server": summarize_server(status, info),
        "settings": {"lengths": lengths, "repeats": args.repeats, "clients": args.clients,
                     "clientMode": "threads" if args.client_threads else "processes", "httpLengths": sorted(args.http_lengths),
                     "perBlockLengths": sorted(args.per_block_lengths), "fillerMargin": FILLER_MARGIN, "bound": FOUR_BIT_BOUND},
        "lengths": [], "errors": [],
    }
    if args.fill_report:
        try:
            with open(args.fill_report) as f:
                report["fillReport"] = {"file": os.path.basename(args.fill_report), **fill_rates(json.load(f))}
        except (OSError, ValueError, KeyError) as err:
            report["errors"].append(f"fill report {args.fill_report}: {err}")
            log(f"fill report not usable: {err}")
    if not report["server"]["disk"].get("direct", True):
        log("note: the disk tier is not using O_DIRECT: reads may come from the page cache")

    bench = Bench(args, torch, api, pool, status)
    bench.errors[:0] = report["errors"]
    report["errors"] = bench.errors
    for L in lengths:
        try:
            report["lengths"].append(bench.length(L))
        except Exception as err:  # noqa: BLE001 - the next length may still run
            bench.errors.append(f"{L} tokens: {type(err).__name__}: {err}")
            log(f"{L} tokens FAILED: {err}")
            report["lengths"].append({"tokens": L, "blocks": L // tpb, "logicalBytes": L // tpb * pool.block_bytes, "error": str(err)})
        report["checks"] = bench.checks.summary()
        report["wallSeconds"] = time.perf_counter() - started
        write_json(args.json, report)
    if args.write_length:
        report["freeSlotWrites"] = bench.step("free-slot writes", lambda: bench.free_slot_writes(args.write_length, args.write_repeats))
        w = report["freeSlotWrites"]
        if "logicalGBps" in w:
            log(f"writes into free HBM slots, {w['tokens']} tokens: {w['logicalGBps']:.2f} GB/s logical")
    report["skipped"] = bench.skipped
    report["shedRetries"] = api.shed
    report["acquireManyForm"] = "start/count" if api.range_form else f"indices ({api.range_form_note})"
    try:
        api.end_lease(bench.lease)
    except Exception as err:  # noqa: BLE001
        bench.errors.append(f"ending the lease: {err}")
    report["checks"] = bench.checks.summary()
    write_json(args.json, report)

    if bench.client_processes is not None:
        bench.client_processes.close()
    # Prefill after the restore work has given its GPU memory back.
    del bench
    torch.cuda.empty_cache()
    prefill_rows: list[dict] = []
    if args.prefill_report:
        with open(args.prefill_report) as f:
            report["prefill"] = json.load(f)
    elif not args.no_prefill:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import prefill
        try:
            report["prefill"] = prefill.measure(lengths, runs=args.prefill_runs, chunk=args.prefill_chunk, device=args.device, log=log)
        except Exception as err:  # noqa: BLE001
            report["errors"].append(f"prefill: {type(err).__name__}: {err}")
            log(f"prefill FAILED: {err}")
    if report.get("prefill"):
        prefill_rows = report["prefill"].get("rows", [])
    report["comparison"], report["targets"] = compare(report["lengths"], prefill_rows, report.get("fillReport"), report.get("freeSlotWrites"))
    report["wallSeconds"] = time.perf_counter() - started
    report["ok"] = report["checks"]["wrong"] == 0 and not report["errors"]
    write_json(args.json, report)
    pool.close()
    api.close()
    text = markdown(report)
    print(text)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text + "\n")
    return 0 if report["ok"] else 1


# ---- self-test (no torch, no GPU, no spillway server) --------------------------------------

def self_test() -> int:
    import http.server

    failures = 0

    def expect(what: str, cond: bool) -> None:
        nonlocal failures
        print(f"{'ok  ' if cond else 'FAIL'} {what}")
        failures += 0 if cond else 1

    # msgpack: the batch read's answer shape, with every width of bin, ints and strings.
    blocks = [{"index": i, "tier": t, "format": "raw", "lossy": t != "raw", "promoted": True, "data": bytes([i % 251]) * size}
              for i, (t, size) in enumerate([("raw", 3), ("disk", 300), ("quantized", 70000), ("disk", 0)])]
    doc = {"blocks": blocks, "n": -5, "big": 2**40, "neg": -2**40, "f": 1.5, "none": None, "long": "x" * 40}
    decoded = unpackb(bytearray(packb(doc)))
    expect("msgpack: map of arrays of maps decoded", [b["index"] for b in decoded["blocks"]] == [0, 1, 2, 3])
    expect("msgpack: bin 8/16/32 as memoryviews of the right bytes",
           all(isinstance(b["data"], memoryview) and bytes(b["data"]) == blocks[i]["data"] for i, b in enumerate(decoded["blocks"])))
    expect("msgpack: scalars", (decoded["n"], decoded["big"], decoded["neg"], decoded["f"], decoded["none"], decoded["long"]) == (-5, 2**40, -2**40, 1.5, None, "x" * 40))
    expect("msgpack: bools and strings", decoded["blocks"][1]["lossy"] is True and decoded["blocks"][0]["tier"] == "raw")
    wide = b"\xdf" + struct.pack(">I", 1) + b"\xdb" + struct.pack(">I", 1) + b"k" + b"\xdd" + struct.pack(">I", 2) + b"\xd0\xff" + b"\xca" + struct.pack(">f", 2.0)
    expect("msgpack: map32, str32, array32, int8, float32", unpackb(wide) == {"k": [-1, 2.0]})
    expect("msgpack: fixext", isinstance(unpackb(b"\xd4\x01\x02"), ExtType))
    for bad_input in (b"\xc4\x05ab", b"\x92\x01", b"\xc1", b"\x01\x02"):
        try:
            unpackb(bad_input)
            expect(f"msgpack: {bad_input!r} refused", False)
        except ValueError:
            expect(f"msgpack: {bad_input!r} refused", True)
    try:
        import msgpack  # type: ignore[import-not-found]
        packed = msgpack.packb({"blocks": blocks}, use_bin_type=True)
        expect("msgpack: the msgpack module's encoding decodes the same", [bytes(b["data"]) for b in unpackb(packed)["blocks"]] == [b["data"] for b in blocks])
    except ImportError:
        print("skip msgpack module not installed")

    # Plans.
    plan = filler_plan(10240, 1927, 8192)
    expect("filler: tiers 0 and 1 plus the margin, in sequences of the limit",
           plan["blocks"] == 10240 + 1927 + FILLER_MARGIN and plan["sequences"] == [8192, 4039] and plan["chunk"] == 1024)
    expect("filler: a small tier 0 gets small chunks", filler_plan(100, 10, 8192)["chunk"] == 50)
    parts = split_contiguous(8192, 16)
    expect("split: 16 contiguous ranges covering all", len(parts) == 16 and parts[0] == (0, 512) and sum(c for _, c in parts) == 8192 and parts[-1][0] + parts[-1][1] == 8192)
    parts = split_contiguous(130, 16)
    expect("split: uneven sizes differ by one", sorted({c for _, c in parts}) == [8, 9] and sum(c for _, c in parts) == 130)
    expect("split: fewer blocks than clients", split_contiguous(3, 16) == [(0, 1), (1, 1), (2, 1)])
    expect("seeds differ across contexts and blocks", len({block_seed(context_seed(1, L), i) for L in DEFAULT_LENGTHS for i in range(3)}) == 15)
    expect("lengths parse", parse_lengths("2k, 4096 32k") == [2048, 4096, 32768])

    # Metrics.
    text = ('# HELP x\nspillway_disk_bytes_total{direction="read"} 100\nspillway_disk_bytes_total{direction="write"} 5\n'
            'spillway_moves_total{kind="promote",from="disk",to="quantized"} 3\nother_total 9\n')
    text2 = text.replace(" 100", " 1100").replace("} 3", "} 13")
    d = metrics_delta(parse_metrics(text), parse_metrics(text2))
    expect("metrics: deltas of the watched series", disk_read_bytes(d) == 1000 and len(d) == 2)
    turns = disk_turns({'spillway_disk_op_seconds_sum{direction="read"}': 6.0, 'spillway_disk_op_seconds_count{direction="read"}': 2000.0,
                        'spillway_disk_op_seconds_sum{direction="write"}': 1.0}, 8, 1.0)
    expect("disk turns: the busy share counts both directions, a read's turn reads only", turns["busyShare"] == 7 / 8 and turns["readTurnMs"] == 3.0)
    expect("disk turns: none without the depth or reads", disk_turns({}, None, 1.0) == {"inFlight": None, "busyShare": None, "readTurnMs": None})
    waits = js_thread_waits({'spillway_native_task_seconds_sum{phase="returned"}': 0.02, 'spillway_native_task_seconds_count{phase="returned"}': 40.0,
                             'spillway_native_task_seconds_sum{phase="run"}': 9.0})
    expect("JS-thread waits: the returned phase's mean", waits["tasks"] == 40 and abs(waits["meanMs"] - 0.5) < 1e-9)
    expect("JS-thread waits: none without tasks", js_thread_waits({})["meanMs"] is None)

    # Fill report and the comparison.
    spill_fill = {"device": "GPU", "disk": {"read16": 1.5, "read1": 1.4}, "variants": [
        {"variant": "4bit", "blocks": 2048, "inFlight": 16, "io": "cufile", "cufileMode": "compat",
         "spill": {"logicalGBps": 7.0, "physicalGBps": 1.9}, "fill": {"logicalGBps": 7.5, "physicalGBps": 2.0, "readS": 0.512},
         "repeats": [{"spill": 1.9, "fill": 2.0}, {"spill": 1.8, "fill": 2.1}, {"spill": 1.9, "fill": 1.7}]},
        {"variant": "raw", "spill": {"logicalGBps": 1.7, "physicalGBps": 1.7}, "fill": {"logicalGBps": 1.5, "physicalGBps": 1.5}}]}
    fill = fill_rates(spill_fill)
    expect("fill report: the 4-bit logical fill rate", fill["fillLogicalGBps"] == 7.5 and fill["diskRead16GBps"] == 1.5)
    expect("fill report: a read's time at its depth, the runs it is the median of", fill["readTurnMs"] == 4.0 and fill["runs"] == 3)
    with tempfile.TemporaryDirectory() as work:
        stub = f"{shlex.quote(sys.executable)} -c " + shlex.quote(f"import json, sys; json.dump({json.dumps(spill_fill)}, open(sys.argv[-1], 'w'))")
        got = fill_beside(stub, work)
        expect("fill beside: the command's report read from the --out it was given, and removed",
               got["fillLogicalGBps"] == 7.5 and got["readTurnMs"] == 4.0 and os.listdir(work) == [])
        try:
            fill_beside(f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(\"no GPU\")'", work)
            expect("fill beside: a failed command raises", False)
        except RuntimeError as err:
            expect("fill beside: a failed command raises with its message", "no GPU" in str(err))
    mib2 = 2 * 2**20
    lengths = [{"tokens": L, "blocks": L // 16, "logicalBytes": L // 16 * mib2,
                "restore": {"seconds": L / 16 * mib2 / 7e9, "logicalGBps": 7.0, "foundIn": {"disk": L // 16},
                            "diskTurns": {"inFlight": 16, "busyShare": 0.9, "readTurnMs": 4.5}},
                "concurrent": {"seconds": L / 16 * mib2 / 7.2e9, "logicalGBps": 7.2}} for L in (2048, 8192)]
    lengths[1]["httpBatch"] = {"seconds": 3.0, "logicalGBps": 0.5}
    lengths[1]["restore"]["runs"] = [{"seconds": 1.0, "logicalGBps": 6.0, "fillBeside": {"fillLogicalGBps": 6.0}},
                                     {"seconds": 1.0, "logicalGBps": 4.0, "fillBeside": {"fillLogicalGBps": 5.0}},
                                     {"seconds": 1.0, "logicalGBps": 7.0, "fillBeside": {"error": "x"}},
                                     {"seconds": 1.0, "logicalGBps": 9.0, "fillBeside": {"fillLogicalGBps": 10.0}}]
    prefill_rows = [{"tokens": 2048, "seconds": 0.2, "breakEvenGBps": 1.3, "tflops": 400}, {"tokens": 8192, "seconds": 0.9, "breakEvenGBps": 1.2, "tflops": 450}]
    rows, targets = compare(lengths, prefill_rows, fill, {"tokens": 32768, "blocks": 2048, "logicalGBps": 40.0})
    expect("compare: speedup = prefill / restore", abs(rows[1]["speedup"] - 0.9 / (512 * mib2 / 7e9)) < 1e-9)
    expect("compare: vs fill", abs(rows[0]["vsFill"] - 7.0 / 7.5) < 1e-9)
    expect("compare: vs the fill beside each restore, the median of the ratios, a failed fill passed over",
           "vsFillBeside" not in rows[0] and abs(rows[1]["vsFillBeside"] - 0.9) < 1e-9)
    expect("targets: the fill beside from 8k, met", targets["oneClientVsFillBeside"]["values"] == {8192: rows[1]["vsFillBeside"]}
           and targets["oneClientVsFillBeside"]["met"] is True)
    expect("targets: fill ratio from 8k only, met", list(targets["oneClientVsFill"]["values"]) == [8192] and targets["oneClientVsFill"]["met"] is True)
    expect("targets: concurrent, writes", targets["concurrentNotSlower"]["met"] is True and targets["freeSlotWrites"]["met"] is True)
    rows2, targets2 = compare(lengths, [], None, None)
    expect("targets: not measured without prefill and fill report", targets2["fasterThanRecompute"]["met"] is None and targets2["oneClientVsFill"]["met"] is None)
    report = {"device": "GPU", "blockBytes": mib2, "tokensPerBlock": 16, "fillReport": fill, "lengths": lengths, "comparison": rows, "targets": targets,
              "freeSlotWrites": {"tokens": 32768, "blocks": 2048, "logicalGBps": 40.0, "acquireSeconds": 0.05, "releaseSeconds": 0.05, "runs": [{}]},
              "prefill": {"chunk": 8192, "attention": "sdpa", "rows": prefill_rows}, "checks": {"blocks": 10, "exact": 1, "lossy": 9, "wrong": 0, "maxRelativeError": 0.01}}
    md = markdown(report)
    expect("markdown: one row a length, the targets", md.count("\n| 2048 |") == 1 and md.count("\n| 8192 |") == 1 and "| yes |" in md)
    expect("markdown: the fill rate's runs", "in flight, cufile, the median of 3 runs)" in md)
    expect("markdown: the fills beside", "(the same 4-bit fill, at the end of each round of one-client and concurrent restores; 3 runs): 5.00-10.00 GB/s logical, median 6.00." in md
           and "| 0.93 | - | disk 128 |" in md and "| 0.93 | 0.90 | disk 512 |" in md)
    expect("markdown: the disk's turns", "(16 at once): 2048: 0.90 of their time busy, a read 4.50 ms; 8192:" in md and "(spill-fill's reads: 4.00 ms)" in md)
    runs = [{"seconds": 3.0}, {"error": "x"}, {"seconds": 1.0}, {"seconds": 2.0}]
    expect("median run", median_run(runs) == {"seconds": 2.0} and median_run([{"seconds": 1.0}, {"seconds": 2.0}]) == {"seconds": 1.0})

    # The HTTP client against a stub: JSON, errors with their fields, 503 retried, start/count fallback, binary answers.
    state = {"shed": 2, "seen": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def answer(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/v1/status":
                return self.answer(200, b'{"backend":{"name":"stub"}}')
            self.answer(404, b'{"error":{"code":"NOT_FOUND","message":"no route"}}')

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
            state["seen"].append((self.path, body, self.headers.get("authorization")))
            if self.path.endswith("/acquire-many"):
                if state["shed"] > 0:
                    state["shed"] -= 1
                    return self.answer(503, b'{"error":{"code":"OVERLOADED","message":"shed"}}')
                if "start" in body:
                    return self.answer(400, b'{"error":{"code":"INVALID_ARGUMENT","message":"body: unknown key start","field":"body"}}')
                if len(body["indices"]) > 4:
                    return self.answer(400, json.dumps({"error": {"code": "INVALID_ARGUMENT", "message": "too many", "field": "indices", "max": 4, "requested": len(body["indices"])}}).encode())
                return self.answer(200, json.dumps({"blocks": [{"index": i, "slot": i, "blockId": 100 + i} for i in body["indices"]], "timing": {"fillMs": 1}}).encode())
            if self.path.endswith("/blocks/read"):
                payload = packb({"blocks": [{"index": i, "tier": "disk", "format": "raw", "lossy": True, "promoted": True, "data": bytes([i]) * 1000} for i in body["indices"]]})
                return self.answer(200, payload, "application/msgpack")
            self.answer(404, b'{"error":{"code":"NOT_FOUND","message":"no route"}}')

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = Api(f"http://127.0.0.1:{server.server_address[1]}", token="t" * 16, shed_sleep_s=0.001)
        got = api.acquire_many("lease-1", "seq", 0, 3)
        expect("http: 503 retried, then start/count refused, then indices", api.shed == 2 and not api.range_form and [b["slot"] for b in got["blocks"]] == [0, 1, 2])
        expect("http: the answer's other fields kept", got["timing"] == {"fillMs": 1})
        expect("http: bearer token sent", state["seen"][-1][2] == "Bearer " + "t" * 16)
        try:
            api.acquire_many("lease-1", "seq", 0, 10)
            expect("http: too large a batch raises with max", False)
        except ApiError as err:
            expect("http: too large a batch raises with max", err.status == 400 and err.details.get("max") == 4 and err.code == "INVALID_ARGUMENT")
        headers, body = api.read_batch("seq", [5, 6])
        blocks_back = unpackb(body)["blocks"]
        expect("http: binary answer into a writable buffer, decoded", isinstance(body, bytearray) and bytes(blocks_back[1]["data"]) == bytes([6]) * 1000)
        try:
            api.json("POST", "/nowhere", {})
            expect("http: an error answer raises with its code", False)
        except ApiError as err:
            expect("http: an error answer raises with its code", err.status == 404 and err.code == "NOT_FOUND")
        api.close()
        # The concurrent clients, as processes and as threads: one answer a range, in range order.
        ranges = [(0, 2), (2, 2), (4, 1)]
        procs = ClientProcesses(api.url, api.token, 4)
        try:
            t0, done = procs.run(["L0", "L1", "L2"], "seq", ranges)
            t0b, again = procs.run(["L0", "L1", "L2"], "seq", ranges)
        finally:
            procs.close()
        clones = [api.clone() for _ in ranges]
        t1, threaded = Bench._acquire_from_threads(clones, ["L0", "L1", "L2"], "seq", ranges)
        for c in clones:
            c.close()
        for mode, got_runs, start in (("processes", done, t0), ("processes, again", again, t0b), ("threads", threaded, t1)):
            expect(f"clients ({mode}): one answer a range, in order, after the start",
                   [[b["index"] for b in d.answer["blocks"]] for d in got_runs] == [[0, 1], [2, 3], [4]]
                   and all(d.error is None and d.finished >= start for d in got_runs))
        expect("clients (processes): each sent its range under its own lease",
               {p for p, _, _ in state["seen"] if "/leases/L" in p} == {f"/v1/zero-copy/leases/L{i}/acquire-many" for i in range(3)})
    finally:
        server.shutdown()
        server.server_close()
    print("self-test: " + ("all passed" if not failures else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

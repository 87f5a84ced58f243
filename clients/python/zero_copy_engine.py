#!/usr/bin/env python3
"""An inference engine on the same GPU as spillway, moving KV blocks without copying them.

It maps spillway's tier-0 pool once (a CUDA IPC handle, opened with CuPy and seen from
torch through DLPack), then, under a lease:

1. writes K/V for more blocks than tier 0 holds straight into the slots that acquire
   answers, releasing each with written=True: the oldest blocks are quantized into tier 1
   and spilled to disk as the pool fills;
2. reads them all back, newest first, through acquire, which promotes a block (fill from
   disk, dequantize) into a slot before it answers, and checks them: blocks that never
   left tier 0 bit-exact, quantized ones within the 4-bit bound the tests use;
3. runs the same workload through the HTTP-bytes path (PUT and GET of
   application/octet-stream, with the device-host copies an engine needs around them),
   checks it the same way, and prints the time of each and their ratio.

Then, if the server has loaded weights onto the GPU (GET /v1/weights/ipc answers 200), it
maps that arena too and reads its tensor table.

    python3 zero_copy_engine.py --url http://127.0.0.1:8420 [--blocks N] [--json report.json]

Needs torch and cupy with a GPU, and a server on the GPU backend on the same GPU. Prints a
JSON report, then a summary; exits non-zero if any block read back is wrong.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time

import cupy
import torch

from spillway_client import Mismatch, SpillwayClient, SpillwayError, run_example

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# ||a - b||^2 / ||a||^2 a block through 4-bit quantization must meet (bench/block-content.ts).
FOUR_BIT_BOUND = 0.02


class IpcMapping:
    """A cudaIpcMemHandle_t opened once in this process, its bytes as a uint8 torch tensor."""

    def __init__(self, handle_b64: str, nbytes: int, device: int):
        self._device = device
        with cupy.cuda.Device(device):
            self._ptr = cupy.cuda.runtime.ipcOpenMemHandle(base64.b64decode(handle_b64))
            memory = cupy.cuda.UnownedMemory(self._ptr, nbytes, self, device)
            array = cupy.ndarray((nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(memory, 0))
        self.bytes = torch.from_dlpack(array)

    def close(self) -> None:
        del self.bytes
        with cupy.cuda.Device(self._device):
            cupy.cuda.runtime.ipcCloseMemHandle(self._ptr)


class Pool:
    """Tier 0 as blocks: slot i is a tensor of the raw block shape, in place."""

    def __init__(self, info: dict, device: int):
        self.info = info
        self.dtype = DTYPES[info["dtype"]]
        self.shape = tuple(info["shape"])
        self.block_bytes = info["elementBytes"]
        for n in self.shape:
            self.block_bytes *= n
        self.mapping = IpcMapping(info["handle"], info["slots"] * info["slotBytes"], device)
        self._slots = self.mapping.bytes.view(info["slots"], info["slotBytes"])

    def slot(self, i: int) -> torch.Tensor:
        return self._slots[i, : self.block_bytes].view(self.dtype).view(self.shape)


def check(what: str, expected: torch.Tensor, got: torch.Tensor, lossy: bool) -> float:
    """Raises Mismatch unless `got` is `expected`: bit for bit, or within the bound if lossy."""
    if not lossy:
        if not torch.equal(expected.view(torch.uint8), got.view(torch.uint8)):
            raise Mismatch(f"{what}: an exact block differs from what was written")
        return 0.0
    a, b = expected.float(), got.float()
    err = float(((a - b) ** 2).sum() / (a * a).sum())
    if not err < FOUR_BIT_BOUND:
        raise Mismatch(f"{what}: relative error {err:.4f} over the bound {FOUR_BIT_BOUND}")
    return err


def verify(label: str, kv: torch.Tensor, back: torch.Tensor, found: list[dict]) -> dict:
    """Checks every block read back; counts where they were found."""
    tiers: dict[str, int] = {}
    errors = []
    for i, f in enumerate(found):
        tiers[f["tier"]] = tiers.get(f["tier"], 0) + 1
        err = check(f"{label} block {i} (from {f['tier']})", kv[i], back[i], f["lossy"])
        if f["lossy"]:
            errors.append(err)
    return {
        "foundIn": tiers,
        "exact": sum(1 for f in found if not f["lossy"]),
        "lossy": len(errors),
        "maxRelativeError": max(errors, default=0.0),
    }


def zero_copy_round(client: SpillwayClient, pool: Pool, kv: torch.Tensor, back: torch.Tensor) -> dict:
    seq = client.create_sequence()["id"]
    client.allocate(seq, len(kv))
    found: list[dict] = [{}] * len(kv)
    with client.lease("zero-copy-engine") as lease:
        start = time.perf_counter()
        for i in range(len(kv)):
            held = lease.acquire(seq, i)
            pool.slot(held["slot"]).copy_(kv[i])
            torch.cuda.synchronize()  # the writes are done before the slot becomes the block
            lease.release(held["blockId"], written=True)
        wrote = time.perf_counter()
        for i in reversed(range(len(kv))):
            held = lease.acquire(seq, i)  # answers once a promotion has landed in the slot
            back[i].copy_(pool.slot(held["slot"]))
            torch.cuda.synchronize()
            lease.release(held["blockId"])
            found[i] = held
        read = time.perf_counter()
    client.free_sequence(seq)
    return {"writeSeconds": wrote - start, "readSeconds": read - wrote, "seconds": read - start,
            "promoted": sum(1 for f in found if f["promoted"]), "found": found}


def http_round(client: SpillwayClient, kv: torch.Tensor, back: torch.Tensor) -> dict:
    seq = client.create_sequence()["id"]
    client.allocate(seq, len(kv))
    found: list[dict] = [{}] * len(kv)
    start = time.perf_counter()
    for i in range(len(kv)):
        client.write_block(seq, i, kv[i].view(torch.uint8).flatten().cpu().numpy().tobytes())
    wrote = time.perf_counter()
    for i in reversed(range(len(kv))):
        block = client.read_block(seq, i)
        back[i].view(torch.uint8).flatten().copy_(torch.frombuffer(bytearray(block.data), dtype=torch.uint8))
        found[i] = {"tier": block.tier, "lossy": block.lossy, "promoted": block.promoted}
    torch.cuda.synchronize()
    read = time.perf_counter()
    client.free_sequence(seq)
    return {"writeSeconds": wrote - start, "readSeconds": read - wrote, "seconds": read - start,
            "promoted": sum(1 for f in found if f["promoted"]), "found": found}


def map_weights(client: SpillwayClient, device: int) -> dict:
    """Maps the weights arena where the server has one on the GPU; says why not otherwise."""
    try:
        ipc = client.weights_ipc()
    except SpillwayError as err:
        return {"mapped": False, "reason": str(err)}
    mapping = IpcMapping(ipc["handle"], ipc["bytes"], device)
    tensors = client.weights_tensors()
    first = None
    if tensors:
        t = tensors[0]
        byte_sum = int(mapping.bytes[t["offset"]: t["offset"] + t["bytes"]].sum())
        first = {"name": t["name"], "dtype": t["dtype"], "shape": t["shape"], "byteSum": byte_sum}
    mapping.close()
    return {"mapped": True, "bytes": ipc["bytes"], "tensors": len(tensors), "firstTensor": first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8420")
    parser.add_argument("--token", default=os.environ.get("SPILLWAY_TOKEN"))
    parser.add_argument("--blocks", type=int, help="blocks in the workload (default: three times what tier 0 holds)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each path; the fastest of each is compared")
    parser.add_argument("--device", type=int, default=0, help="the CUDA device the server's tier 0 is on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()

    client = SpillwayClient(args.url, token=args.token)
    status = client.status()
    if status["backend"]["name"] != "gpu":
        print(f"the server runs the {status['backend']['name']} backend: zero-copy needs the GPU backend", file=sys.stderr)
        return 2
    torch.cuda.set_device(args.device)
    info = client.zero_copy_pool()
    pool = Pool(info, args.device)
    blocks = args.blocks or 3 * info["slots"]

    generator = torch.Generator(device="cuda").manual_seed(args.seed)
    kv = torch.randn((blocks, *pool.shape), generator=generator, device="cuda").to(pool.dtype)
    back = torch.empty_like(kv)
    runs: dict[str, list[dict]] = {"zeroCopy": [], "http": []}
    checks: dict[str, dict] = {}
    for _ in range(args.rounds):
        for path, run in (("zeroCopy", lambda: zero_copy_round(client, pool, kv, back)), ("http", lambda: http_round(client, kv, back))):
            back.zero_()
            result = run()
            checks[path] = verify(path, kv, back, result.pop("found"))
            runs[path].append(result)
    best = {path: min(r, key=lambda x: x["seconds"]) for path, r in runs.items()}
    moved = blocks * pool.block_bytes * 2  # written once and read once
    report = {
        "device": torch.cuda.get_device_name(args.device),
        # How each tier moves bytes, without the disk file's path.
        "backend": {tier: re.sub(r" on /\S+:", ":", path) for tier, path in status["backend"]["paths"].items()},
        "pool": {k: info[k] for k in ("slots", "slotBytes", "dtype", "shape")},
        "blocks": blocks,
        "blockBytes": pool.block_bytes,
        "rounds": args.rounds,
        "checks": checks,
        "zeroCopy": best["zeroCopy"],
        "http": best["http"],
        "ratio": {  # zero-copy time over HTTP-bytes time, same workload; below 1 is faster
            "write": best["zeroCopy"]["writeSeconds"] / best["http"]["writeSeconds"],
            "read": best["zeroCopy"]["readSeconds"] / best["http"]["readSeconds"],
            "total": best["zeroCopy"]["seconds"] / best["http"]["seconds"],
        },
        "weights": map_weights(client, args.device),
    }
    pool.mapping.close()
    client.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")

    zc, h = best["zeroCopy"], best["http"]
    mib = pool.block_bytes / 2**20
    print(f"\n{blocks} blocks of {mib:.2f} MiB through a tier 0 of {info['slots']} slots on {report['device']}:")
    for path in ("zeroCopy", "http"):
        c = checks[path]
        print(f"  {path:>8}: found in {c['foundIn']}; {c['exact']} bit-exact, {c['lossy']} within the 4-bit bound "
              f"(max relative error {c['maxRelativeError']:.4f})")
    print(f"  zero-copy {zc['seconds']:.3f} s ({zc['writeSeconds']:.3f} write, {zc['readSeconds']:.3f} read, {moved / zc['seconds'] / 1e9:.2f} GB/s), "
          f"HTTP bytes {h['seconds']:.3f} s ({h['writeSeconds']:.3f} write, {h['readSeconds']:.3f} read, {moved / h['seconds'] / 1e9:.2f} GB/s)")
    r = report["ratio"]
    print(f"  zero-copy / HTTP time: {r['total']:.3f} (write {r['write']:.3f}, read {r['read']:.3f}); "
          f"{1 / r['total']:.1f}x faster")
    w = report["weights"]
    if w["mapped"]:
        print(f"  weights: arena of {w['bytes']} bytes mapped, {w['tensors']} tensors; first {w['firstTensor']}")
    else:
        print(f"  weights: not mapped: {w['reason']}")
    print("ok")
    return 0


if __name__ == "__main__":
    run_example(main)

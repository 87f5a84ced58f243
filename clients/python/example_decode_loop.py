#!/usr/bin/env python3
"""A decode loop against a spillway server, as an inference engine drives it.

Request A prefills a prompt and decodes: every time a block's worth of tokens is done, it
allocates a block, writes its KV bytes with the token ids (committing it to the prefix
cache) and reads its whole context back in one request. Request B arrives with the same
prompt: it looks the prefix up, attaches the cached blocks instead of recomputing them,
reads them, and decodes a continuation of its own. Both are freed at the end.

    python3 example_decode_loop.py --url http://127.0.0.1:8420 [--token T]

Exits non-zero if anything read back is not what was written.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct

from spillway_client import Mismatch, SpillwayClient, chain_hashes, run_example

# Quantized blocks come back within the quantizer's error (about 1% of the norm at 4 bits,
# docs/QUANTIZATION.md); misplaced or wrong data is off by ~200%.
LOSSY_BOUND = 0.1


def kv_block(rng: random.Random, values: int, dtype: str) -> bytes:
    """Stand-in KV bytes: normal values in the server's dtype, little-endian."""
    xs = [rng.gauss(0.0, 1.0) for _ in range(values)]
    if dtype == "fp32":
        return struct.pack("<%df" % values, *xs)
    if dtype == "fp16":
        return struct.pack("<%de" % values, *xs)
    # bf16: the high half of each fp32
    as_u32 = struct.unpack("<%dI" % values, struct.pack("<%df" % values, *xs))
    return struct.pack("<%dH" % values, *(u >> 16 for u in as_u32))


def decode(data: bytes, dtype: str) -> list[float]:
    if dtype == "fp32":
        return list(struct.unpack("<%df" % (len(data) // 4), data))
    if dtype == "fp16":
        return list(struct.unpack("<%de" % (len(data) // 2), data))
    halves = struct.unpack("<%dH" % (len(data) // 2), data)
    return list(struct.unpack("<%df" % len(halves), struct.pack("<%dI" % len(halves), *(h << 16 for h in halves))))


def relative_error(expected: bytes, got: bytes, dtype: str) -> float:
    a, b = decode(expected, dtype), decode(got, dtype)
    err = sum((x - y) ** 2 for x, y in zip(a, b))
    norm = sum(x * x for x in a)
    return math.inf if norm == 0 else err / norm


def check(what: str, expected: bytes, block, dtype: str) -> None:
    if len(block.data) != len(expected):
        raise Mismatch(f"{what}: {len(block.data)} bytes, expected {len(expected)}")
    if not block.lossy:
        if block.data != expected:
            raise Mismatch(f"{what}: exact block (from {block.tier}) differs from what was written")
    elif relative_error(expected, block.data, dtype) > LOSSY_BOUND:
        raise Mismatch(f"{what}: quantized block (from {block.tier}) is off by more than {LOSSY_BOUND}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8420")
    parser.add_argument("--token", default=os.environ.get("SPILLWAY_TOKEN"))
    parser.add_argument("--prompt-blocks", type=int, default=3)
    parser.add_argument("--decode-blocks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    client = SpillwayClient(args.url, token=args.token)
    status = client.status()
    capacity = status["capacity"]
    tpb = capacity["tokensPerBlock"]
    dtype = status["config"]["model"]["dtype"]
    values = capacity["rawBlockBytes"] // {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]
    print(f"server: {status['backend']['name']} backend; {tpb} tokens and {capacity['rawBlockBytes']} bytes a block")
    for tier in capacity["tiers"]:
        print(f"  {tier['name']:>9}: {tier['slots']} blocks, {tier['tokens']} tokens; {status['backend']['paths'][tier['name']]}")

    rng = random.Random(args.seed)
    prompt = [rng.randrange(32000) for _ in range(args.prompt_blocks * tpb)]
    written: dict[int, bytes] = {}
    tiers_seen: set[str] = set()

    # ---- request A: prefill the prompt, then decode ----------------------------------
    a = client.create_sequence()["id"]
    tokens: list[int] = []
    for step in range((args.prompt_blocks + args.decode_blocks) * tpb):
        tokens.append(prompt[step] if step < len(prompt) else rng.randrange(32000))  # "sampled"
        if len(tokens) % tpb:
            continue
        index = len(tokens) // tpb - 1
        [ref] = client.allocate(a, 1)
        assert ref["index"] == index
        written[index] = kv_block(rng, values, dtype)
        result = client.write_block(a, index, written[index], tokens=tokens[-tpb:])
        if result["hash"] != chain_hashes(tokens, tpb)[-1]:
            raise Mismatch(f"block {index}: the server hashed it {result['hash']}, the client {chain_hashes(tokens, tpb)[-1]}")
        # Attention over the context so far: every block of it in one request.
        for i, block in enumerate(client.read_blocks(a, range(index + 1))):
            tiers_seen.add(block.tier)
            check(f"{a} block {i}", written[i], block, dtype)
    print(f"request A ({a}): {len(tokens)} tokens in {len(written)} blocks, read back from tiers {sorted(tiers_seen)}")

    # ---- request B: the same prompt, served from the prefix cache -----------------------
    lookup = client.lookup_prefix(tokens=prompt + [rng.randrange(32000)])
    expected_hashes = chain_hashes(prompt, tpb)
    if lookup["hashes"] != expected_hashes or [c["hash"] for c in lookup["cached"]] != expected_hashes:
        raise Mismatch(f"prefix lookup: {lookup}")
    b = client.create_sequence(prefix=lookup["hashes"])
    if len(b["attached"]) != args.prompt_blocks:
        raise Mismatch(f"attached {len(b['attached'])} blocks, expected {args.prompt_blocks}")
    for i in range(args.prompt_blocks):
        check(f"{b['id']} shared block {i}", written[i], client.read_block(b["id"], i), dtype)
    [ref] = client.allocate(b["id"], 1)
    own = kv_block(rng, values, dtype)
    client.write_block(b["id"], ref["index"], own)
    client.pin(b["id"], ref["index"])
    check(f"{b['id']} block {ref['index']}", own, client.read_block(b["id"], ref["index"], promote=False), dtype)
    client.unpin(b["id"], ref["index"])
    print(f"request B ({b['id']}): attached {len(b['attached'])} cached blocks of {len(expected_hashes)}, wrote 1 of its own")

    freed_a = client.free_sequence(a)
    freed_b = client.free_sequence(b["id"])
    print(f"freed: A {freed_a}, B {freed_b}")
    client.close()
    print("ok")
    return 0


if __name__ == "__main__":
    run_example(main)

#!/usr/bin/env python3
"""Writes a synthetic Llama-3-8B-shaped checkpoint of at least --gib GiB as --shards
safetensors files plus a Hugging Face index (written last: its presence marks a complete
checkpoint). Tensors are drawn on the GPU with torch and copied to the host to be saved."""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

HIDDEN, INTERMEDIATE, KV, VOCAB = 4096, 14336, 1024, 128256
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def layer(i):
    p = f"model.layers.{i}"
    return [
        (f"{p}.input_layernorm.weight", (HIDDEN,)),
        (f"{p}.self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        (f"{p}.self_attn.k_proj.weight", (KV, HIDDEN)),
        (f"{p}.self_attn.v_proj.weight", (KV, HIDDEN)),
        (f"{p}.self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        (f"{p}.post_attention_layernorm.weight", (HIDDEN,)),
        (f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
        (f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
        (f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gib", type=float, default=8)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--dtype", choices=DTYPES, default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    dtype = DTYPES[args.dtype]
    size = torch.empty((), dtype=dtype).element_size()
    nbytes = lambda shape: math.prod(shape) * size
    head = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    tail = [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    tensors = list(head)
    total = sum(nbytes(s) for _, s in head + tail)
    layers = 0
    while total < args.gib * 2**30:
        block = layer(layers)
        layers += 1
        tensors += block
        total += sum(nbytes(s) for _, s in block)
    tensors += tail

    # Contiguous runs of tensors, each about total / shards bytes.
    groups, done = [[]], 0
    for name, shape in tensors:
        if done >= total * len(groups) / args.shards and len(groups) < args.shards:
            groups.append([])
        groups[-1].append((name, shape))
        done += nbytes(shape)

    os.makedirs(args.out, exist_ok=True)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    weight_map = {}
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        data = {n: torch.randn(s, generator=generator, device=args.device, dtype=dtype).cpu() for n, s in group}
        save_file(data, os.path.join(args.out, name), metadata={"format": "pt"})
        weight_map.update({n: name for n, _ in group})
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    print(json.dumps({"out": args.out, "files": len(groups), "tensors": len(tensors), "bytes": total}))


if __name__ == "__main__":
    main()

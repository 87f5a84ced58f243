#!/usr/bin/env python3
"""Recompute baseline: the prefill of a Llama-3-8B-shaped decoder on this GPU.

What restoring an evicted context competes with is computing its KV again. This times the
prefill of n tokens with a model of Llama-3-8B's shape and reports, per n, the seconds and
the KV bytes that prefill produces, as a "break-even" rate: KV bytes / prefill seconds. A
restore that moves the same KV faster than that beats recomputing it.

The model, exactly (no download: the weights are random, drawn on the GPU):

- bf16 everywhere but the RMSNorm statistics and the RoPE angles (fp32).
- Embedding 128256 x 4096, rows drawn from N(0, 1).
- 32 decoder layers, each:
    h = RMSNorm(x) (eps 1e-5, weight of ones);
    [q | k | v] = h @ Wqkv^T with one fused Wqkv of (4096 + 1024 + 1024) x 4096:
        32 query heads and 8 KV heads of head dim 128 (grouped-query attention, 4 query
        heads a KV head);
    RoPE on q and k (rotate-half convention, theta 500000, Llama 3.1's frequency scaling:
        factor 8, low/high frequency factors 1 and 4, original context 8192);
    k and v are written into the KV cache at their positions;
    o = causal attention of q over every cached position up to its own
        (torch.nn.functional.scaled_dot_product_attention; see "Chunks" below);
    x = x + o @ Wo^T (4096 x 4096);
    h = RMSNorm(x);
    [g | u] = h @ Wgu^T with one fused Wgu of (2 x 14336) x 4096;
    x = x + (SiLU(g) * u) @ Wdown^T (4096 x 14336).
- A final RMSNorm and the LM head (128256 x 4096), applied to the last position only (all
  a prefill needs for the next token).
- Linear weights drawn from N(0, 1/fan_in); Wo and Wdown scaled down by a further
  sqrt(2 * 32) so that the residual stream keeps its scale through the layers. 8.03 G
  parameters, 16.06 GB.
- Fused QKV and gate/up projections, as serving engines load them; eager PyTorch, no CUDA
  graphs and no torch.compile. The report gives the achieved TFLOP/s, so that the baseline's
  efficiency can be judged (an engine with newer attention kernels prefills faster, which
  lowers the break-even rate).

Chunks: the prompt goes through in chunks of 8192 tokens (--chunk). Each chunk's K/V are
written into a preallocated cache of [32 layers, K/V, 8 heads, n, 128] (128 KiB a token,
16 GiB for 128k tokens), and the chunk's queries attend to the cache up to the chunk's end
with a lower-right causal mask: query i of a chunk starting at s sees keys 0 .. s + i. So
32k and 128k tokens fit in memory (no n x n scores, activations of one chunk at a time).
Which attention call does this is chosen at startup: the first of
  1. SDPA, flash backend only, GQA without repeating KV (enable_gqa), causal_lower_right;
  2. SDPA, flash backend only, KV repeated to 32 heads, causal_lower_right;
  3. SDPA with an explicit boolean mask, KV repeated, any backend;
  4. plain matmul/softmax (only where SDPA is missing; never fast)
that runs and agrees with an fp32 reference on a small problem (prefix and no prefix). The
choice is in the report ("attention"). A small model is also prefilled in chunks and whole
and the two compared, so that the chunked path is known to compute the same thing.

Timing: weights drawn, a warm-up prefill of 2048 tokens and one of chunk + 2048 tokens
(two chunks, so the prefix path is warm), then for each n: the cache allocated outside the
timing, torch.cuda.synchronize() around each prefill, the median of 5 runs up to 8k tokens,
3 up to 32k, 2 above (--runs overrides). KV bytes = n * layers * 2 * kv_heads * head_dim * 2
(128 KiB a token); break-even GB/s = KV bytes / median seconds / 1e9.

    python3 bench/restore/prefill.py [--lengths 2048,4096,8192,32768,131072] [--json out.json]

As a module: `measure(lengths)` returns the report (its "rows" are the table); `Model`
is the model. Needs torch with a GPU (the small checks also run on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any, Callable, Optional

LLAMA3_8B: dict[str, Any] = {
    "layers": 32,
    "hidden": 4096,
    "heads": 32,
    "kvHeads": 8,
    "headDim": 128,
    "ffn": 14336,
    "vocab": 128256,
    "normEps": 1e-5,
    "ropeTheta": 500000.0,
    "ropeScaling": {"factor": 8.0, "lowFreqFactor": 1.0, "highFreqFactor": 4.0, "originalContext": 8192},
}

# A model small enough to check the chunked path against a whole prefill anywhere.
TINY: dict[str, Any] = {
    "layers": 2, "hidden": 256, "heads": 4, "kvHeads": 2, "headDim": 64, "ffn": 512, "vocab": 512,
    "normEps": 1e-5, "ropeTheta": 500000.0, "ropeScaling": LLAMA3_8B["ropeScaling"],
}

DEFAULT_LENGTHS = (2048, 4096, 8192, 32768, 131072)
DEFAULT_CHUNK = 8192
GB = 1e9


def kv_bytes_per_token(cfg: dict = LLAMA3_8B, element_bytes: int = 2) -> int:
    """K and V of every layer for one token: 32 * 2 * 8 * 128 * 2 = 131072 bytes for Llama-3-8B."""
    return cfg["layers"] * 2 * cfg["kvHeads"] * cfg["headDim"] * element_bytes


def parameter_count(cfg: dict = LLAMA3_8B) -> int:
    h, d, ffn = cfg["hidden"], cfg["headDim"], cfg["ffn"]
    per_layer = h * (cfg["heads"] + 2 * cfg["kvHeads"]) * d + cfg["heads"] * d * h + 3 * h * ffn + 2 * h
    return cfg["layers"] * per_layer + 2 * cfg["vocab"] * h + h


def prefill_flops(n: int, cfg: dict = LLAMA3_8B) -> float:
    """Matmul FLOPs of a prefill of n tokens: the projections for every token, the LM head
    for the last, and causal attention (QK^T and PV over n(n+1)/2 query-key pairs)."""
    h, d, ffn = cfg["hidden"], cfg["headDim"], cfg["ffn"]
    per_token = cfg["layers"] * (h * (cfg["heads"] + 2 * cfg["kvHeads"]) * d + cfg["heads"] * d * h + 3 * h * ffn)
    linear = 2.0 * n * per_token + 2.0 * h * cfg["vocab"]
    attention = cfg["layers"] * 2 * 2.0 * cfg["heads"] * d * (n * (n + 1) / 2)
    return linear + attention


def default_runs(n: int) -> int:
    return 5 if n <= 8192 else 3 if n <= 32768 else 2


def _torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - the GPU machine has torch
        raise SystemExit(f"prefill needs torch: {err}")
    return torch


def llama3_inv_freq(torch, cfg: dict):
    """RoPE inverse frequencies with Llama 3.1's scaling (as transformers computes them)."""
    d, theta = cfg["headDim"], cfg["ropeTheta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    s = cfg.get("ropeScaling")
    if not s:
        return inv_freq.float()
    factor, low, high, old = s["factor"], s["lowFreqFactor"], s["highFreqFactor"], s["originalContext"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled).float()


# ---- attention ----------------------------------------------------------------------------

def _reference_attention(torch, q, k, v, prefix: int):
    """fp32 attention with KV repeated and an explicit lower-right causal mask."""
    rep = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(rep, dim=1)
    v = v.float().repeat_interleave(rep, dim=1)
    t, s = q.shape[2], k.shape[2]
    scores = q.float() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(dim=-1) @ v).to(q.dtype)


def attention_candidates(torch) -> list[tuple[str, Callable]]:
    """Ways to compute chunk attention (q [1, H, T, D] over k, v [1, Hkv, prefix + T, D]),
    fastest first. Each is a function (q, k, v, prefix) -> [1, H, T, D]."""
    F = torch.nn.functional
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        SDPBackend = sdpa_kernel = None
    try:
        from torch.nn.attention.bias import causal_lower_right
    except ImportError:
        causal_lower_right = None

    def repeat(q, k, v):
        rep = q.shape[1] // k.shape[1]
        return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)

    out: list[tuple[str, Callable]] = []
    if sdpa is not None and sdpa_kernel is not None and causal_lower_right is not None:
        flash = [SDPBackend.FLASH_ATTENTION]

        def flash_gqa(q, k, v, prefix):
            with sdpa_kernel(flash):
                if prefix == 0:
                    return sdpa(q, k, v, is_causal=True, enable_gqa=True)
                return sdpa(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]), enable_gqa=True)

        def flash_repeat(q, k, v, prefix):
            k, v = repeat(q, k, v)
            with sdpa_kernel(flash):
                if prefix == 0:
                    return sdpa(q, k, v, is_causal=True)
                return sdpa(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))

        out.append(("sdpa-flash-gqa-lower-right", flash_gqa))
        out.append(("sdpa-flash-repeat-kv-lower-right", flash_repeat))
    if sdpa is not None:
        def masked(q, k, v, prefix):
            k, v = repeat(q, k, v)
            if prefix == 0:
                return sdpa(q, k, v, is_causal=True)
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(diagonal=prefix)
            return sdpa(q, k, v, attn_mask=mask)

        out.append(("sdpa-explicit-mask-repeat-kv", masked))
    out.append(("matmul-softmax", lambda q, k, v, prefix: _reference_attention(torch, q, k, v, prefix)))
    return out


def choose_attention(torch, heads: int, kv_heads: int, head_dim: int, device, dtype) -> tuple[str, Callable, list[dict]]:
    """The first candidate that runs and matches the fp32 reference, with and without a prefix."""
    g = torch.Generator(device=device).manual_seed(7)
    tried: list[dict] = []
    cases = []
    for t, prefix in ((96, 0), (64, 160)):
        q = torch.randn(1, heads, t, head_dim, generator=g, device=device).to(dtype)
        k = torch.randn(1, kv_heads, prefix + t, head_dim, generator=g, device=device).to(dtype)
        v = torch.randn(1, kv_heads, prefix + t, head_dim, generator=g, device=device).to(dtype)
        # The chunk's q is a transposed view in the model; test the same strides.
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
        cases.append((q, k, v, prefix, _reference_attention(torch, q, k, v, prefix).float()))
    for name, fn in attention_candidates(torch):
        try:
            worst = 0.0
            for q, k, v, prefix, ref in cases:
                got = fn(q, k, v, prefix)
                if tuple(got.shape) != tuple(ref.shape):
                    raise ValueError(f"shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
                worst = max(worst, float((got.float() - ref).abs().max()))
            ok = math.isfinite(worst) and worst < 0.03
            tried.append({"name": name, "maxAbsError": worst, "ok": ok})
            if ok:
                return name, fn, tried
        except Exception as err:  # noqa: BLE001 - a candidate that cannot run is skipped
            tried.append({"name": name, "error": f"{type(err).__name__}: {str(err)[:200]}"})
    raise RuntimeError(f"no attention candidate works here: {tried}")


# ---- the model ----------------------------------------------------------------------------

class Model:
    """A Llama-3-8B-shaped decoder with random weights (see the module docstring)."""

    def __init__(self, cfg: dict = LLAMA3_8B, device: Any = "cuda", seed: int = 0, dtype: Any = None):
        torch = _torch()
        self.torch = torch
        self.F = torch.nn.functional
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.bfloat16
        h, d, ffn, layers = cfg["hidden"], cfg["headDim"], cfg["ffn"], cfg["layers"]
        self.q_width, self.kv_width = cfg["heads"] * d, cfg["kvHeads"] * d
        g = torch.Generator(device=self.device).manual_seed(seed)
        residual = 1.0 / math.sqrt(2 * layers)

        def weight(rows: int, cols: int, scale: float = 1.0):
            return torch.empty(rows, cols, device=self.device, dtype=self.dtype).normal_(0.0, scale / math.sqrt(cols), generator=g)

        def ones():
            return torch.ones(h, device=self.device, dtype=self.dtype)

        self.embed = torch.empty(cfg["vocab"], h, device=self.device, dtype=self.dtype).normal_(0.0, 1.0, generator=g)
        self.layers = [{
            "attnNorm": ones(),
            "wqkv": weight(self.q_width + 2 * self.kv_width, h),
            "wo": weight(h, self.q_width, residual),
            "mlpNorm": ones(),
            "wgu": weight(2 * ffn, h),
            "wdown": weight(h, ffn, residual),
        } for _ in range(layers)]
        self.final_norm = ones()
        self.lm_head = weight(cfg["vocab"], h)
        self.inv_freq = llama3_inv_freq(torch, cfg).to(self.device)
        self.attention, self._attend, self.attention_tried = choose_attention(
            torch, cfg["heads"], cfg["kvHeads"], d, self.device, self.dtype)

    def parameters(self) -> int:
        n = self.embed.numel() + self.final_norm.numel() + self.lm_head.numel()
        return n + sum(t.numel() for layer in self.layers for t in layer.values())

    def alloc_cache(self, n: int):
        """The KV cache of n tokens: [layers, K/V, kv_heads, n, head_dim]."""
        c = self.cfg
        return self.torch.empty(c["layers"], 2, c["kvHeads"], n, c["headDim"], device=self.device, dtype=self.dtype)

    def _rmsnorm(self, x, w):
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg["normEps"])
        return w * xf.to(x.dtype)

    def _rope(self, start: int, end: int):
        pos = self.torch.arange(start, end, device=self.device, dtype=self.torch.float32)
        freqs = self.torch.outer(pos, self.inv_freq)
        emb = self.torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :]

    @staticmethod
    def _rotate(x, cos, sin, torch):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layer(self, p: dict, x, cache, start: int, end: int, cos, sin):
        torch, F, c = self.torch, self.F, self.cfg
        t = end - start
        h = self._rmsnorm(x, p["attnNorm"])
        q, k, v = F.linear(h, p["wqkv"]).split([self.q_width, self.kv_width, self.kv_width], dim=-1)
        q = self._rotate(q.view(t, c["heads"], c["headDim"]), cos, sin, torch)
        k = self._rotate(k.view(t, c["kvHeads"], c["headDim"]), cos, sin, torch)
        cache[0, :, start:end].copy_(k.transpose(0, 1))
        cache[1, :, start:end].copy_(v.view(t, c["kvHeads"], c["headDim"]).transpose(0, 1))
        o = self._attend(q.transpose(0, 1).unsqueeze(0), cache[0, :, :end].unsqueeze(0), cache[1, :, :end].unsqueeze(0), start)
        x = x + F.linear(o.squeeze(0).transpose(0, 1).reshape(t, self.q_width), p["wo"])
        h = self._rmsnorm(x, p["mlpNorm"])
        gate, up = F.linear(h, p["wgu"]).split(c["ffn"], dim=-1)
        return x + F.linear(F.silu(gate) * up, p["wdown"])

    def prefill(self, tokens, cache=None, chunk: int = DEFAULT_CHUNK, return_hidden: bool = False):
        """Runs the prompt through in chunks, filling `cache`; answers the last position's
        logits (or its final hidden state)."""
        torch, F = self.torch, self.F
        n = tokens.numel()
        if cache is None:
            cache = self.alloc_cache(n)
        out = None
        with torch.inference_mode():
            for start in range(0, n, chunk):
                end = min(n, start + chunk)
                x = F.embedding(tokens[start:end], self.embed)
                cos, sin = self._rope(start, end)
                for i, p in enumerate(self.layers):
                    x = self._layer(p, x, cache[i], start, end, cos, sin)
                if end == n:
                    last = self._rmsnorm(x[-1:], self.final_norm)
                    out = last if return_hidden else F.linear(last, self.lm_head)
        return out


def chunk_check(device: Any = "cuda", seed: int = 3) -> dict:
    """A small model prefilled in chunks and whole: the same last hidden state and KV."""
    torch = _torch()
    model = Model(TINY, device=device, seed=seed)
    n = 200
    tokens = torch.randint(0, TINY["vocab"], (n,), device=model.device, generator=torch.Generator(device=model.device).manual_seed(seed))
    whole_cache, chunked_cache = model.alloc_cache(n), model.alloc_cache(n)
    whole = model.prefill(tokens, whole_cache, chunk=n, return_hidden=True).float()
    chunked = model.prefill(tokens, chunked_cache, chunk=64, return_hidden=True).float()
    hidden_err = float((whole - chunked).norm() / whole.norm())
    kv_err = float((whole_cache.float() - chunked_cache.float()).norm() / whole_cache.float().norm())
    ok = hidden_err < 0.02 and kv_err < 0.02
    return {"tokens": n, "chunk": 64, "attention": model.attention, "hiddenRelativeError": hidden_err, "kvRelativeError": kv_err, "ok": ok}


def time_prefill(model: Model, n: int, runs: int, chunk: int, seed: int = 0) -> list[float]:
    torch = model.torch
    g = torch.Generator(device=model.device).manual_seed(seed + n)
    tokens = torch.randint(0, model.cfg["vocab"], (n,), device=model.device, generator=g)
    cache = model.alloc_cache(n)
    times = []
    for _ in range(runs):
        torch.cuda.synchronize(model.device)
        t0 = time.perf_counter()
        model.prefill(tokens, cache, chunk=chunk)
        torch.cuda.synchronize(model.device)
        times.append(time.perf_counter() - t0)
    del cache, tokens
    return times


def measure(lengths=DEFAULT_LENGTHS, runs: Optional[int] = None, chunk: int = DEFAULT_CHUNK, device: Any = None,
            seed: int = 0, check: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Times the prefill of each length; the report's "rows" are the table.

    runs: runs per length (default: 5 up to 8k tokens, 3 up to 32k, 2 above); the median
    is reported. The model is freed before this returns.
    """
    torch = _torch()
    if not torch.cuda.is_available():
        raise SystemExit("prefill timing needs a CUDA GPU")
    device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
    torch.cuda.set_device(device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "model": {**LLAMA3_8B, "dtype": "bf16", "weights": "random, N(0, 1/fan_in)", "parameters": parameter_count(),
                  "fused": ["qkv", "gate_up"], "execution": "eager"},
        "chunk": chunk, "kvBytesPerToken": kv_bytes_per_token(),
    }
    if check:
        report["chunkCheck"] = chunk_check(device)
        log(f"prefill: chunked vs whole on a small model: {report['chunkCheck']}")
        if not report["chunkCheck"]["ok"]:
            raise RuntimeError(f"chunked prefill differs from a whole prefill: {report['chunkCheck']}")
    t0 = time.perf_counter()
    model = Model(LLAMA3_8B, device=device, seed=seed)
    torch.cuda.synchronize(device)
    report["buildSeconds"] = time.perf_counter() - t0
    report["attention"] = model.attention
    report["attentionTried"] = model.attention_tried
    log(f"prefill: model of {model.parameters() / 1e9:.2f} G parameters built in {report['buildSeconds']:.1f} s; attention {model.attention}")
    warm = [min(2048, chunk), chunk + 2048]
    t0 = time.perf_counter()
    for n in warm:
        time_prefill(model, n, 1, chunk, seed)
    report["warmup"] = {"tokens": warm, "seconds": time.perf_counter() - t0}
    rows = []
    per_token = kv_bytes_per_token()
    for n in lengths:
        k = runs if runs is not None else default_runs(n)
        times = time_prefill(model, n, k, chunk, seed)
        sec = statistics.median(times)
        row = {
            "tokens": n, "runs": times, "seconds": sec, "kvBytes": n * per_token,
            "breakEvenGBps": n * per_token / sec / GB, "tokensPerSecond": n / sec,
            "tflops": prefill_flops(n) / sec / 1e12,
        }
        rows.append(row)
        log(f"prefill {n:>6} tokens: {sec:.3f} s (runs {', '.join(f'{t:.3f}' for t in times)}), "
            f"break-even {row['breakEvenGBps']:.2f} GB/s, {row['tflops']:.0f} TFLOP/s")
        torch.cuda.empty_cache()
    report["rows"] = rows
    del model
    torch.cuda.empty_cache()
    return report


def markdown(report: dict) -> str:
    lines = [
        f"prefill of a Llama-3-8B-shaped bf16 model on {report['device']} (chunks of {report['chunk']}, attention {report['attention']}):",
        "",
        "| tokens | prefill s (median) | runs | KV GiB | break-even GB/s | tokens/s | TFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['tokens']} | {r['seconds']:.3f} | {len(r['runs'])} | {r['kvBytes'] / 2**30:.2f} | "
                     f"{r['breakEvenGBps']:.2f} | {r['tokensPerSecond']:.0f} | {r['tflops']:.0f} |")
    return "\n".join(lines)


def parse_lengths(text: str) -> list[int]:
    out = []
    for part in text.replace(",", " ").split():
        part = part.strip().lower()
        mult = 1024 if part.endswith("k") else 1
        out.append(int(part[:-1] if mult > 1 else part) * mult)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default=",".join(str(n) for n in DEFAULT_LENGTHS),
                        help="prompt lengths in tokens, comma- or space-separated (2k style accepted)")
    parser.add_argument("--runs", type=int, help="runs per length (default 5 up to 8k tokens, 3 up to 32k, 2 above)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="tokens a chunk")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="skip the chunked-vs-whole check on a small model")
    parser.add_argument("--check-only", action="store_true", help="only the attention choice and the small-model check (CPU works)")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    if args.check_only:
        torch = _torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        name, _, tried = choose_attention(torch, 32, 8, 128, torch.device(device), dtype)
        result = {"device": device, "attention": name, "attentionTried": tried, "chunkCheck": chunk_check(device)}
        print(json.dumps(result, indent=2))
        return 0 if result["chunkCheck"]["ok"] else 1

    report = measure(parse_lengths(args.lengths), runs=args.runs, chunk=args.chunk, device=args.device, seed=args.seed, check=not args.no_check)
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Times safetensors.torch.load_file(path, device="cuda") over every shard of a checkpoint
directory (the caller drops the page cache first) and prints one JSON line."""
import glob
import json
import os
import sys
import time

import safetensors
import torch
from safetensors.torch import load_file


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
    # CUDA context creation is start-up cost of any loader: keep it out of the timing.
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    loaded = [load_file(f, device="cuda") for f in files]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    nbytes = sum(t.numel() * t.element_size() for sd in loaded for t in sd.values())
    print(json.dumps({
        "loader": "safetensors.torch.load_file(device='cuda')",
        "files": len(files),
        "bytes": nbytes,
        "seconds": seconds,
        "gbps": nbytes / seconds / 1e9,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "gpu": torch.cuda.get_device_name(),
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Whether a disk reads a tier file's slots faster in order: O_DIRECT reads of one disk slot each
(a 4-bit block's 561,152 bytes), --depth threads at once, over --slots slots of FILE (written with
random bytes if it is too short), in four orders taking turns: ascending, shuffled, shuffled within
windows of 16 (as concurrent evictions leave a context's slots) and descending. The page cache is
dropped before each pass where this process may (root).

    python3 bench/restore/disk_order.py FILE [--slots 2048] [--depth 16] [--turns 3]
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import threading
import time

SLOT_BYTES = 561152


def ensure_file(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) >= size:
        return
    chunk = os.urandom(16 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk) + 1):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def drop_caches() -> None:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # O_DIRECT reads bypass the cache anyway; dropping it only clears what else is there


def read_pass(path: str, order: list[int], depth: int) -> float:
    """GB/s of reading the slots in `order`, each by the next free thread."""
    drop_caches()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    next_index = iter(range(len(order)))
    lock = threading.Lock()

    def work() -> None:
        buf = mmap.mmap(-1, SLOT_BYTES)  # page-aligned, as O_DIRECT needs
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            os.preadv(fd, [buf], order[i] * SLOT_BYTES)

    threads = [threading.Thread(target=work) for _ in range(depth)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    os.close(fd)
    return len(order) * SLOT_BYTES / seconds / 1e9


def orders(slots: int) -> dict[str, list[int]]:
    ascending = list(range(slots))
    shuffled = ascending[:]
    random.Random(1).shuffle(shuffled)
    local: list[int] = []
    for w in range(0, slots, 16):
        window = ascending[w:w + 16]
        random.Random(w).shuffle(window)
        local += window
    return {"ascending": ascending, "shuffled": shuffled, "shuffled within 16": local, "descending": ascending[::-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--slots", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    ensure_file(args.file, args.slots * SLOT_BYTES)
    for turn in range(args.turns):
        for name, order in orders(args.slots).items():
            print(f"turn {turn} {name}: {read_pass(args.file, order, args.depth):.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()

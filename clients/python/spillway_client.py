"""A small client for spillway's HTTP API, on the Python standard library only.

Control goes as JSON, one block's bytes as application/octet-stream, many blocks of a
sequence as msgpack (spillway_msgpack.py, also standard library only).

    client = SpillwayClient("http://127.0.0.1:8420", token=None)
    seq = client.create_sequence()["id"]
    client.allocate(seq, 1)
    client.write_block(seq, 0, data, tokens=[...])
    block = client.read_block(seq, 0)
    client.write_blocks(seq, [(1, data1, tokens1), (2, data2, None)])   # in order, one request
    blocks = client.read_blocks(seq, [0, 1, 2])                         # in the order asked

An engine on the same GPU can skip the bytes: zero_copy_pool() gives tier 0 as a CUDA IPC
handle, and under a lease (kept alive by a heartbeat thread) acquire() answers a block's
slot in it, pinned until release() (zero_copy_engine.py shows the whole loop):

    with client.lease("engine-0") as lease:
        held = lease.acquire(seq, 0)       # {"slot", "blockId", "written", ...}
        ...                                # read or write the slot on the GPU, synchronize
        lease.release(held["blockId"], written=True)

Block hashes are computed as the server computes them (runtime/prefix.ts):
hash(block i) = SHA-256(hash(block i-1) || token ids as u32 little-endian)[0:16], hex,
with 16 zero bytes as the parent of block 0.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import struct
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from spillway_msgpack import packb, unpackb

ROOT_HASH = "0" * 32


def block_hash(parent: str, tokens: Sequence[int]) -> str:
    body = bytes.fromhex(parent) + struct.pack("<%dI" % len(tokens), *tokens)
    return hashlib.sha256(body).digest()[:16].hex()


def chain_hashes(tokens: Sequence[int], tokens_per_block: int) -> list[str]:
    """Hashes of the full blocks of a token sequence; a partial tail is left out."""
    hashes: list[str] = []
    parent = ROOT_HASH
    for start in range(0, len(tokens) - tokens_per_block + 1, tokens_per_block):
        parent = block_hash(parent, tokens[start:start + tokens_per_block])
        hashes.append(parent)
    return hashes


class Mismatch(Exception):
    """A block read back is not what was written (the examples' checks raise it)."""


def run_example(main: Callable[[], int]) -> None:
    """Exits with main's status, or with 1 and the message where a check found a mismatch."""
    try:
        sys.exit(main())
    except Mismatch as err:
        print(f"mismatch: {err}", file=sys.stderr)
        sys.exit(1)


class SpillwayError(Exception):
    """An error answer: a stable code, the HTTP status and the server's details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.details = details


@dataclass
class Block:
    data: Union[bytes, memoryview]  # a batch read's blocks are views into its one answer
    tier: str
    format: str
    lossy: bool
    promoted: bool


class SpillwayClient:
    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 30.0):
        self._base_url = base_url
        self._token = token
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._timeout = timeout
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self._conn: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def clone(self) -> "SpillwayClient":
        """Another client to the same server, with its own connection (one per thread)."""
        return SpillwayClient(self._base_url, self._token, self._timeout)

    # ---- status and limits ----------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/v1/health")

    def status(self) -> dict:
        return self._json("GET", "/v1/status")

    def limits(self) -> dict:
        return self._json("GET", "/v1/limits")

    def set_limits(self, **changes: int) -> dict:
        return self._json("PATCH", "/v1/limits", changes)

    def telemetry(self) -> dict:
        return self._json("GET", "/v1/telemetry")

    # ---- sequences and blocks ---------------------------------------------------------

    def create_sequence(self, id: Optional[str] = None, prefix: Optional[list[str]] = None) -> dict:
        body: dict[str, Any] = {}
        if id is not None:
            body["id"] = id
        if prefix is not None:
            body["prefix"] = prefix
        return self._json("POST", "/v1/sequences", body)

    def allocate(self, sequence: str, count: int) -> list[dict]:
        return self._json("POST", f"/v1/sequences/{_seg(sequence)}/blocks", {"count": count})["blocks"]

    def write_block(self, sequence: str, index: int, data: bytes, tokens: Optional[Sequence[int]] = None) -> dict:
        query = "?tokens=" + ",".join(str(t) for t in tokens) if tokens is not None else ""
        _, body = self._send("PUT", f"/v1/sequences/{_seg(sequence)}/blocks/{index}{query}", data, "application/octet-stream")
        return json.loads(body)

    def read_block(self, sequence: str, index: int, promote: bool = True, format: str = "raw") -> Block:
        query = urllib.parse.urlencode({"promote": "true" if promote else "false", "format": format})
        headers, body = self._send("GET", f"/v1/sequences/{_seg(sequence)}/blocks/{index}?{query}")
        return Block(
            data=body,
            tier=headers.get("spillway-tier", ""),
            format=headers.get("spillway-format", ""),
            lossy=headers.get("spillway-lossy") == "true",
            promoted=headers.get("spillway-promoted") == "true",
        )

    def write_blocks(self, sequence: str, blocks: Sequence[tuple[int, bytes, Optional[Sequence[int]]]]) -> list[dict]:
        """Writes many blocks of a sequence in one request, in the order given, as (index, data,
        tokens or None); at most the server's server.maxBatchBytes of blocks. An entry that fails
        raises, naming it ("body.blocks.K") and how many were written before it."""
        entries = [{"index": i, "data": d, **({"tokens": list(t)} if t is not None else {})} for i, d, t in blocks]
        _, body = self._send("POST", f"/v1/sequences/{_seg(sequence)}/blocks/write", packb({"blocks": entries}), "application/msgpack")
        return json.loads(body)["blocks"]

    def read_blocks(self, sequence: str, indices: Sequence[int], promote: bool = True, format: str = "raw") -> list[Block]:
        """Reads many blocks of a sequence in one request, in the order asked; at most the server's
        server.maxBatchBytes of blocks. An index that fails raises, naming it ("body.indices.K")."""
        request = {"indices": list(indices), "promote": promote, "format": format}
        _, body = self._send("POST", f"/v1/sequences/{_seg(sequence)}/blocks/read", json.dumps(request).encode(), "application/json")
        return [Block(data=b["data"], tier=b["tier"], format=b["format"], lossy=b["lossy"], promoted=b["promoted"])
                for b in unpackb(body)["blocks"]]

    def pin(self, sequence: str, index: int) -> dict:
        return self._json("POST", f"/v1/sequences/{_seg(sequence)}/blocks/{index}/pin")

    def unpin(self, sequence: str, index: int) -> dict:
        return self._json("POST", f"/v1/sequences/{_seg(sequence)}/blocks/{index}/unpin")

    def free_sequence(self, sequence: str) -> dict:
        return self._json("DELETE", f"/v1/sequences/{_seg(sequence)}")

    def lookup_prefix(self, tokens: Optional[Sequence[int]] = None, hashes: Optional[list[str]] = None) -> dict:
        if (tokens is None) == (hashes is None):
            raise ValueError("give tokens or hashes")
        return self._json("POST", "/v1/prefix/lookup", {"tokens": list(tokens)} if tokens is not None else {"hashes": hashes})

    # ---- zero-copy (an engine on the same GPU) ----------------------------------------

    def zero_copy_pool(self) -> dict:
        """Tier 0 as a CUDA IPC handle (base64) with its slot geometry; 409 on the host backend."""
        return self._json("GET", "/v1/zero-copy/pool")

    def create_lease(self, client: str, ttl_ms: Optional[int] = None) -> dict:
        body: dict[str, Any] = {"client": client}
        if ttl_ms is not None:
            body["ttlMs"] = ttl_ms
        return self._json("POST", "/v1/zero-copy/leases", body)

    def heartbeat(self, lease: str) -> dict:
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/heartbeat")

    def end_lease(self, lease: str) -> dict:
        return self._json("DELETE", f"/v1/zero-copy/leases/{_seg(lease)}")

    def acquire(self, lease: str, sequence: str, index: int) -> dict:
        """Brings a block into tier 0, pinned under the lease; answers once its data is in the slot."""
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/acquire", {"sequence": sequence, "index": index})

    def release(self, lease: str, block_id: int, written: bool = False) -> dict:
        """Unpins a block; written=True (after synchronizing the writes) makes the slot the block."""
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/release", {"blockId": block_id, "written": written})

    def acquire_many(self, lease: str, sequence: str, indices: Optional[Sequence[int]] = None,
                     start: Optional[int] = None, count: Optional[int] = None) -> list[dict]:
        """Brings many blocks into tier 0 as one pipeline, pinned under the lease: by `indices`, or
        `count` indices from `start`. Answers every entry once all the data is in the slots; an entry
        with "error" failed alone."""
        body: dict[str, Any] = {"sequence": sequence}
        if indices is not None:
            body["indices"] = list(indices)
        else:
            body["start"], body["count"] = start, count
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/acquire-many", body)["blocks"]

    def release_many(self, lease: str, blocks: Sequence[tuple[int, bool]]) -> list[dict]:
        """Unpins many blocks, given as (block_id, written) pairs; an entry with "error" failed alone."""
        body = {"blocks": [{"blockId": b, "written": w} for b, w in blocks]}
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/release-many", body)["blocks"]

    def attach(self, lease: str, prefix: list[str], allocate: int = 0, id: Optional[str] = None) -> dict:
        """Creates a sequence on the cached part of `prefix` (block hashes) with `allocate` blocks
        more, and acquires them all: {"id", "attached", "blocks": [... as acquire_many ...]}."""
        body: dict[str, Any] = {"prefix": prefix, "allocate": allocate}
        if id is not None:
            body["id"] = id
        return self._json("POST", f"/v1/zero-copy/leases/{_seg(lease)}/attach", body)

    def lease(self, client: str, ttl_ms: int = 10_000) -> "Lease":
        return Lease(self, client, ttl_ms)

    def weights_ipc(self) -> dict:
        """The weights arena as a CUDA IPC handle, where the server loaded weights onto the GPU."""
        return self._json("GET", "/v1/weights/ipc")

    def weights_tensors(self) -> list[dict]:
        return self._json("GET", "/v1/weights/tensors")["tensors"]

    # ---- transport ------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        _, data = self._send(method, path, payload, None if body is None else "application/json")
        return json.loads(data)

    def _send(self, method: str, path: str, body: Optional[bytes] = None, content_type: Optional[str] = None):
        headers = dict(self._auth)
        if content_type:
            headers["content-type"] = content_type
        # One kept-alive connection; a server that closed it idle is reconnected once.
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                res = self._conn.getresponse()
                data = res.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 1:
                    raise
        response_headers = {k.lower(): v for k, v in res.getheaders()}
        if res.status >= 400:
            raise _error(res.status, data)
        return response_headers, data


def _seg(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _error(status: int, body: bytes) -> SpillwayError:
    try:
        error = dict(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return SpillwayError(status, "HTTP_ERROR", body[:200].decode("utf-8", "replace"), {})
    code = str(error.pop("code", "HTTP_ERROR"))
    message = str(error.pop("message", ""))
    return SpillwayError(status, code, message, error)


class Lease:
    """A zero-copy lease, renewed by a heartbeat thread on its own connection until closed.

    An engine that dies stops the heartbeat: the server releases its blocks once the TTL
    passes, so nothing stays pinned for longer than that.
    """

    def __init__(self, owner: SpillwayClient, client: str, ttl_ms: int):
        self._owner = owner
        self.id: str = owner.create_lease(client, ttl_ms)["id"]
        self._beat = owner.clone()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, args=(ttl_ms / 3000.0,), daemon=True)
        self._thread.start()

    def _heartbeat(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self._beat.heartbeat(self.id)

    def acquire(self, sequence: str, index: int) -> dict:
        return self._owner.acquire(self.id, sequence, index)

    def release(self, block_id: int, written: bool = False) -> dict:
        return self._owner.release(self.id, block_id, written)

    def acquire_many(self, sequence: str, indices: Optional[Sequence[int]] = None,
                     start: Optional[int] = None, count: Optional[int] = None) -> list[dict]:
        return self._owner.acquire_many(self.id, sequence, indices, start, count)

    def release_many(self, blocks: Sequence[tuple[int, bool]]) -> list[dict]:
        return self._owner.release_many(self.id, blocks)

    def attach(self, prefix: list[str], allocate: int = 0, id: Optional[str] = None) -> dict:
        return self._owner.attach(self.id, prefix, allocate, id)

    def close(self) -> dict:
        """Stops the heartbeat and ends the lease, releasing what it still holds."""
        self._stop.set()
        self._thread.join()
        self._beat.close()
        return self._owner.end_lease(self.id)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A small client for spillway's HTTP API, on the Python standard library only.

Control goes as JSON, one block's bytes as application/octet-stream. (Batch routes speak
msgpack, which the standard library does not; use the single-block routes from Python.)

    client = SpillwayClient("http://127.0.0.1:8420", token=None)
    seq = client.create_sequence()["id"]
    client.allocate(seq, 1)
    client.write_block(seq, 0, data, tokens=[...])
    block = client.read_block(seq, 0)

Block hashes are computed as the server computes them (runtime/prefix.ts):
hash(block i) = SHA-256(hash(block i-1) || token ids as u32 little-endian)[0:16], hex,
with 16 zero bytes as the parent of block 0.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional, Sequence

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


class SpillwayError(Exception):
    """An error answer: a stable code, the HTTP status and the server's details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.details = details


@dataclass
class Block:
    data: bytes
    tier: str
    format: str
    lossy: bool
    promoted: bool


class SpillwayClient:
    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 30.0):
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

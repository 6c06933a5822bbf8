"""How a fuzz target reads its input, and how a seed is written in the same format.

A target takes plain ``bytes`` (what libFuzzer mutates) and reads it with a :class:`Reader`: small integers,
choices, length-prefixed blobs. Reading past the end yields zeros and empty blobs, so every input is a valid
program and a truncated one simply stops early. :class:`Writer` writes the same fields, so a seed in the corpus
can be built from a well-formed exchange and still be mutated byte by byte.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Reader:
    """Consume a fuzz input field by field; never raises, whatever the input."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size).ljust(size, b"\x00"), "big")

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

    def u32(self) -> int:
        return self.uint(4)

    def u64(self) -> int:
        return self.uint(8)

    def flag(self) -> bool:
        return bool(self.u8() & 1)

    def pick(self, choices: Sequence[T]) -> T:
        return choices[self.u8() % len(choices)]

    def blob(self, limit: int = 1500) -> bytes:
        """A length-prefixed (u16) byte string of at most ``limit`` bytes."""
        return self.take(self.u16() % (limit + 1))

    def text(self, limit: int = 200) -> str:
        return self.blob(limit).decode("utf-8", "replace")

    def rest(self) -> bytes:
        return self.take(self.remaining())

    def ipv4(self) -> str:
        return socket.inet_ntop(socket.AF_INET, self.take(4).ljust(4, b"\x00"))

    def ipv6(self) -> str:
        return socket.inet_ntop(socket.AF_INET6, self.take(16).ljust(16, b"\x00"))


class Writer:
    """Write the fields a :class:`Reader` reads, in the same order (for seeds)."""

    def __init__(self) -> None:
        self.out = bytearray()

    def uint(self, value: int, size: int) -> Writer:
        self.out += (value % (1 << (8 * size))).to_bytes(size, "big")
        return self

    def u8(self, value: int) -> Writer:
        return self.uint(value, 1)

    def u16(self, value: int) -> Writer:
        return self.uint(value, 2)

    def u32(self, value: int) -> Writer:
        return self.uint(value, 4)

    def u64(self, value: int) -> Writer:
        return self.uint(value, 8)

    def flag(self, value: bool) -> Writer:
        return self.u8(int(value))

    def blob(self, data: bytes) -> Writer:
        self.u16(len(data))
        self.out += data
        return self

    def text(self, value: str) -> Writer:
        return self.blob(value.encode())

    def raw(self, data: bytes) -> Writer:
        self.out += data
        return self

    def ipv4(self, host: str) -> Writer:
        self.out += socket.inet_pton(socket.AF_INET, host)
        return self

    def ipv6(self, host: str) -> Writer:
        self.out += socket.inet_pton(socket.AF_INET6, host)
        return self

    def data(self) -> bytes:
        return bytes(self.out)

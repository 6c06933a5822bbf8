"""Stream framing for STUN/TURN over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §12.5).

A stream carries STUN messages (20-byte header with the length of the attributes) and ChannelData messages
(4-byte header, data padded to a multiple of four bytes over streams), back to back.
"""

from __future__ import annotations

from struct import Struct

_HDR = Struct("!HH")
MAX_FRAME = 65536 + 20


def frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the first frame in ``buffer`` (None: need more bytes). Raises ValueError for garbage."""
    if len(buffer) < 4:
        return None
    first: int
    length: int
    first, length = _HDR.unpack_from(buffer)
    if 0x4000 <= first <= 0x7FFF:  # ChannelData, padded on streams
        return 4 + length + (-length & 3)
    if first & 0xC000 == 0:  # STUN: the length field excludes the 20-byte header
        if length & 3:
            raise ValueError("STUN length not a multiple of 4 on the stream")
        return 20 + length
    raise ValueError(f"neither STUN nor ChannelData on the stream (first bytes {first:#06x})")


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete frame at the start of ``buffer`` (in place)."""
    frames: list[bytes] = []
    while True:
        n = frame_length(buffer)
        if n is None or n > len(buffer):
            return frames
        frames.append(bytes(buffer[:n]))
        del buffer[:n]


def pad_channel_data(frame: bytes) -> bytes:
    """Pad a ChannelData message for a stream transport (RFC 8656 §12.5)."""
    return frame + b"\x00" * (-len(frame) & 3)

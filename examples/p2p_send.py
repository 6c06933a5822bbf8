"""Send a file to another machine across NATs with icelab's asyncio API, with copy-paste signalling.

On the receiving machine:

    python examples/p2p_send.py receive OUT_FILE --stun stun.example.org:3478

On the sending machine:

    python examples/p2p_send.py send IN_FILE --stun stun.example.org:3478

Each side prints one line (its ICE credentials and candidates, RFC 8839 candidate lines, as base64 JSON) and waits
for the other side's line on standard input: paste each machine's line into the other. Then ICE (RFC 8445) finds a
path (host, server-reflexive, or relayed through TURN with ``--turn HOST:PORT USER PASSWORD``), and the file
crosses it in numbered chunks, each acknowledged and resent until it is (ICE carries datagrams; reliability is
ours). The receiver checks the SHA-256 the sender announces and exits 0 only if the file arrived intact.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

from ice import Candidate, Connection, TurnClientConfig

CHUNK = 1100
"""Payload bytes per datagram: well under a 1280-byte IPv6 path MTU with TURN's 36 bytes of framing."""
WINDOW = 32
"""Chunks in flight before the sender waits for acknowledgements."""
RESEND = 0.2
"""Seconds before an unacknowledged chunk is sent again."""
LINGER = 2.0
"""Seconds the receiver goes on acknowledging after it has every chunk, unless the sender says it is done."""
HEADER = struct.Struct("!BI")
"""Message kind and chunk number (or the chunk count in the announcement)."""
ANNOUNCE, DATA, ACK, DONE = 1, 2, 3, 4


def offer(conn: Connection) -> str:
    """This side's signalling line: credentials and every gathered candidate."""
    doc = {"ufrag": conn.ufrag, "pwd": conn.pwd, "candidates": [c.to_sdp() for c in conn.local_candidates]}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def answer(conn: Connection, line: str) -> None:
    """Apply the other side's signalling line."""
    try:
        doc = json.loads(base64.b64decode(line.strip()))
        conn.set_remote_credentials(doc["ufrag"], doc["pwd"])
        for text in doc["candidates"]:
            conn.add_remote_candidate(Candidate.from_sdp(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"p2p_send: that is not the other side's line ({exc})") from None
    conn.add_remote_candidate(None)  # end of candidates: we signalled them all at once


async def send_file(conn: Connection, data: bytes) -> None:
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    digest = hashlib.sha256(data).digest()
    acked: set[int] = set()
    announced = asyncio.Event()

    async def receive_acks() -> None:
        while len(acked) < len(chunks) or not announced.is_set():
            msg = await conn.recv()
            kind, number = HEADER.unpack_from(msg)
            if kind == ACK:
                acked.add(number)
            elif kind == ANNOUNCE:
                announced.set()

    receiver = asyncio.ensure_future(receive_acks())
    try:
        while not announced.is_set():  # the announcement carries the chunk count and the file's SHA-256
            conn.send(HEADER.pack(ANNOUNCE, len(chunks)) + digest)
            await asyncio.wait({receiver}, timeout=RESEND)
        while len(acked) < len(chunks):
            waiting = [n for n in range(len(chunks)) if n not in acked][:WINDOW]
            for n in waiting:
                conn.send(HEADER.pack(DATA, n) + chunks[n])
            await asyncio.wait({receiver}, timeout=RESEND)
        for _ in range(3):  # best effort: the receiver exits once it has everything anyway
            conn.send(HEADER.pack(DONE, len(chunks)))
    finally:
        receiver.cancel()


async def receive_file(conn: Connection) -> bytes:
    count, digest = None, b""
    got: dict[int, bytes] = {}
    while count is None or len(got) < count:
        msg = await conn.recv()
        kind, number = HEADER.unpack_from(msg)
        body = msg[HEADER.size:]
        if kind == ANNOUNCE:
            count, digest = number, body
        elif kind == DATA:
            got[number] = body
        conn.send(HEADER.pack(ACK if kind == DATA else ANNOUNCE, number))
    # Our last acknowledgements may be lost: keep answering resent chunks until the sender says it is done, or
    # falls silent.
    while True:
        try:
            msg = await asyncio.wait_for(conn.recv(), LINGER)
        except TimeoutError:
            break
        kind, number = HEADER.unpack_from(msg)
        if kind == DONE:
            break
        conn.send(HEADER.pack(ACK if kind == DATA else ANNOUNCE, number))
    data = b"".join(got[n] for n in range(count))
    if hashlib.sha256(data).digest() != digest:
        raise SystemExit("p2p_send: the file arrived damaged (SHA-256 differs)")
    return data


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


async def main(args: argparse.Namespace) -> int:
    turn = None
    if args.turn:
        host, port, user, password = args.turn
        turn = TurnClientConfig(address(f"{host}:{port}"), user, password)
    conn = Connection(controlling=args.mode == "send", bind=args.bind, stun_servers=args.stun, turn=turn)
    try:
        await conn.gather()
        print(offer(conn), flush=True)
        if sys.stdin.isatty():
            print("paste the other side's line:", file=sys.stderr)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        answer(conn, line)
        selected = await conn.connect(timeout=args.timeout)
        print(f"connected: {selected.local.type.value} {selected.local.address[0]}:{selected.local.address[1]} -> "
              f"{selected.remote.type.value} {selected.remote.address[0]}:{selected.remote.address[1]}",
              file=sys.stderr)
        if args.mode == "send":
            await asyncio.wait_for(send_file(conn, Path(args.file).read_bytes()), args.timeout)
        else:
            Path(args.file).write_bytes(await asyncio.wait_for(receive_file(conn), args.timeout))
        print(f"{args.mode}: done", file=sys.stderr)
        return 0
    finally:
        conn.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("mode", choices=["send", "receive"])
    p.add_argument("file", help="the file to send, or where to write the one received")
    p.add_argument("--stun", type=address, action="append", default=[], metavar="HOST:PORT",
                   help="STUN server for a server-reflexive candidate (repeatable)")
    p.add_argument("--turn", nargs=4, metavar=("HOST", "PORT", "USER", "PASSWORD"), help="TURN server (UDP)")
    p.add_argument("--bind", action="append", default=None, metavar="IP",
                   help="local address to gather on (repeatable; default: 0.0.0.0's primary address)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for connecting, and for the transfer")
    args = p.parse_args(argv)
    if args.bind is None:
        args.bind = [_primary_ip()]
    return args


def _primary_ip() -> str:
    """The address the default route would use (no packet is sent: a UDP connect only picks a source)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only used to pick a source
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))

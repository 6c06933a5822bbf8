"""aioice 0.13 on the line protocol (adapted from the interop harness's aioice peer), for `icelab bench connect`.

usage: aioice_peer.py [--controlling] [--echo] [--ip 127.0.0.1] [--stun HOST:PORT] [--turn HOST PORT USER PASS]
                     [--relay-only]
"""

import asyncio
import sys

import aioice
import aioice.ice

LOCAL_IP = sys.argv[sys.argv.index("--ip") + 1] if "--ip" in sys.argv else "127.0.0.1"
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [LOCAL_IP]  # pin to loopback


def out(s: str) -> None:
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


async def main(argv: list[str]) -> None:
    kw: dict[str, object] = {}
    if "--stun" in argv:
        host, port = argv[argv.index("--stun") + 1].rsplit(":", 1)
        kw["stun_server"] = (host, int(port))
    if "--turn" in argv:
        h, p, u, pw = argv[argv.index("--turn") + 1 : argv.index("--turn") + 5]
        kw.update(turn_server=(h, int(p)), turn_username=u, turn_password=pw)
    if "--relay-only" in argv:
        kw["transport_policy"] = aioice.TransportPolicy.RELAY
    conn = aioice.Connection(ice_controlling="--controlling" in argv, use_ipv6=False, **kw)
    out("ufrag " + conn.local_username)
    out("pwd " + conn.local_password)
    await conn.gather_candidates()
    for c in conn.local_candidates:
        out("candidate " + c.to_sdp())
    out("gathered")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    connected = asyncio.Event()

    async def do_connect() -> None:
        try:
            await asyncio.wait_for(conn.connect(), 30)
        except Exception as e:
            out(f"error {e!r}")
            return
        out("connected")
        connected.set()
        while True:
            try:
                data = await conn.recv()
            except Exception:
                return
            out("recv " + data.decode(errors="replace"))
            if "--echo" in argv:
                await conn.send(data)

    tasks = []
    while line := (await reader.readline()).decode():
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "candidate":
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(arg.removeprefix("candidate:")))
        elif cmd == "remote":
            conn.remote_username, conn.remote_password = arg.split()[:2]
            await conn.add_remote_candidate(None)
            tasks.append(asyncio.ensure_future(do_connect()))
        elif cmd == "send":
            await asyncio.wait_for(connected.wait(), 10)
            await conn.send(arg.encode())
        elif cmd == "quit":
            break
    await conn.close()


asyncio.run(main(sys.argv[1:]))

"""The sans-IO TURN client against the sans-IO TURN server, in memory on a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.client import Allocated, AllocationFailed, PeerData, TurnClient, TurnClientConfig, TurnState
from ice.turn.server import TurnServer, TurnServerConfig

SERVER = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
PEER = ("198.51.100.9", 50000)


@dataclass
class Ports:
    next_port: int = 49152
    released: list[Address] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        self.released.append(relayed)


@dataclass
class World:
    server: TurnServer
    client: TurnClient
    now: float = 0.0
    to_peer: list[tuple[Address, bytes]] = field(default_factory=list)
    events: list[object] = field(default_factory=list)

    def pump(self) -> None:
        """Deliver everything instantly until quiet, both machines driven only through the endpoint contract."""
        moved = True
        while moved:
            moved = False
            while (sent := self.client.poll_transmit()) is not None:
                moved = True
                assert sent == Transmit(SERVER, sent.data, CLIENT)
                self.server.handle_datagram(self.now, SERVER, CLIENT, sent.data)
                self.deliver()
            while (ev := self.client.next_event()) is not None:
                self.events.append(ev)

    def deliver(self) -> None:
        """What the server sends: to the client, or to a peer."""
        while (t := self.server.poll_transmit()) is not None:
            if t.remote == CLIENT:
                self.client.handle_datagram(self.now, CLIENT, t.local or SERVER, t.data)
            else:
                self.to_peer.append((t.remote, t.data))

    def advance(self, until: float) -> None:
        while True:
            at = self.client.next_timeout()
            if at is None or at > until:
                self.now = until
                return
            self.now = at
            self.client.handle_timeout(self.now)
            self.server.handle_timeout(self.now)
            self.pump()


def world(password: str = "secret") -> World:
    server = TurnServer(TurnServerConfig(SERVER, users={"alice": "secret"}), Ports(), secret=b"k")
    client = TurnClient(TurnClientConfig(SERVER, "alice", password), CLIENT)
    return World(server, client)


def test_allocate_with_the_401_round_trip_and_relay_both_ways() -> None:
    w = world()
    w.client.allocate(0.0)
    w.pump()
    assert w.client.state is TurnState.ALLOCATED and w.client.relayed == ("203.0.113.10", 49153)
    assert w.client.mapped == CLIENT and isinstance(w.events[0], Allocated)
    assert w.server.stats["auth-401"] == 1 and w.server.stats["allocate"] == 1
    # Before a channel: a CreatePermission goes first, then the data as a Send indication.
    assert w.client.send(w.now, PEER, b"one")
    w.pump()
    assert w.to_peer == [(PEER, b"one")] and w.server.stats["create-permission"] == 1
    number = w.client.bind_channel(w.now, PEER)
    w.pump()
    assert w.client.send(w.now, PEER, b"three")
    w.pump()
    assert w.to_peer[-1] == (PEER, b"three") and w.server.stats["channel-bind"] == 1
    assert number == 0x4000
    assert w.client.relayed is not None
    w.server.handle_datagram(w.now, w.client.relayed, PEER, b"back")
    w.deliver()
    w.pump()
    assert w.events[-1] == PeerData(PEER, b"back")


def test_wrong_password_fails_clearly() -> None:
    w = world(password="wrong")
    w.client.allocate(0.0)
    w.pump()
    assert w.client.state is TurnState.FAILED
    assert w.events == [AllocationFailed(401, "Unauthorized")]


def test_refreshes_keep_allocation_permission_and_channel_alive() -> None:
    w = world()
    w.client.allocate(0.0)
    w.pump()
    w.client.bind_channel(w.now, PEER)
    w.pump()
    w.advance(2000.0)  # far past every lifetime: only refreshes keep things alive
    relayed = w.client.relayed
    assert relayed in w.server.by_relay and w.server.stats["refresh"] >= 3
    assert w.server.stats["channel-bind"] >= 4  # re-bound every 540 s with the same number
    assert w.client.channels == {PEER: 0x4000}
    assert w.client.send(w.now, PEER, b"still here")
    w.pump()
    assert w.to_peer[-1] == (PEER, b"still here")


def test_reallocate_after_437_and_deallocate_on_close() -> None:
    w = world()
    w.client.allocate(0.0)
    w.pump()
    first = w.client.relayed
    w.server.handle_timeout(10_000)  # the server dropped the allocation behind the client's back
    w.advance(541.0)  # the refresh gets 437: allocate again
    assert w.client.state is TurnState.ALLOCATED and w.client.relayed != first
    w.client.close(w.now)
    w.pump()
    assert not w.server.allocations and w.client.state is TurnState.CLOSED


def test_alternate_server_is_followed_once() -> None:
    """RFC 8656 §7.3 / RFC 8489 §10: a 300 with ALTERNATE-SERVER moves the allocation there, once."""
    from ice.stun import Message, MessageClass, parse
    from ice.stun.attributes import AlternateServer, ErrorCode

    other = ("203.0.113.20", 3478)
    client = TurnClient(TurnClientConfig(SERVER, "alice", "secret"), CLIENT)
    client.allocate(0.0)
    first = client.poll_transmit()
    assert first is not None and (first.local, first.remote) == (CLIENT, SERVER)
    request = parse(first.data)
    redirect = Message(request.method, MessageClass.ERROR, request.transaction_id,
                       [ErrorCode(300, "Try Alternate"), AlternateServer(*other)]).encode(fingerprint=True)
    client.handle_datagram(0.1, CLIENT, SERVER, redirect)
    assert client.server == other
    retry = client.poll_transmit()
    assert retry is not None and (retry.local, retry.remote) == (CLIENT, other)  # to the new server
    second = parse(retry.data)
    again = Message(second.method, MessageClass.ERROR, second.transaction_id,
                    [ErrorCode(300, "Try Alternate"), AlternateServer(*SERVER)]).encode(fingerprint=True)
    client.handle_datagram(0.2, CLIENT, other, again)
    assert client.server == other and client.state is TurnState.FAILED  # not followed twice
    assert client.next_event() == AllocationFailed(300, "Try Alternate")


def test_reallocation_after_437_installs_the_channel_again() -> None:
    w = world()
    w.client.allocate(0.0)
    w.pump()
    w.client.bind_channel(w.now, PEER)
    w.pump()
    w.server.handle_timeout(10_000)  # the server forgot the allocation, its permission and its channel
    w.advance(541.0)
    assert w.client.state is TurnState.ALLOCATED
    (alloc,) = w.server.allocations.values()
    assert alloc.relayed == w.client.relayed and PEER[0] in alloc.permissions and 0x4000 in alloc.channels
    assert w.client.send(w.now, PEER, b"after")
    w.pump()
    assert w.to_peer[-1] == (PEER, b"after")


def test_failed_refresh_is_retried_then_reported_when_the_allocation_expires() -> None:
    w = world()
    w.client.allocate(0.0)
    w.pump()
    server = w.server
    w.server = TurnServer(TurnServerConfig(SERVER, users={}), Ports(), secret=b"other")  # answers nothing useful
    w.server.handle_datagram = lambda *a, **k: None  # type: ignore[method-assign]  # the server went silent
    w.advance(585.0)  # the Refresh at 540 s times out after ~40 s of retransmissions
    assert w.client.state is TurnState.ALLOCATED and w.client.stats["refresh-failed"] >= 1
    assert w.client.next_timeout() is not None  # a retry is scheduled, not abandoned
    w.server = server
    w.advance(595.0)  # the server is back before expiry: a retry succeeds
    assert w.client.state is TurnState.ALLOCATED and server.stats["refresh"] >= 1
    w.server = TurnServer(TurnServerConfig(SERVER, users={}), Ports(), secret=b"other")
    w.server.handle_datagram = lambda *a, **k: None  # type: ignore[method-assign]
    w.advance(3000.0)
    assert w.client.state is TurnState.FAILED
    assert isinstance(w.events[-1], AllocationFailed) and "expired" in w.events[-1].reason


def test_close_while_allocating_stays_closed() -> None:
    w = world()
    w.client.allocate(0.0)
    w.client.close(0.0)
    w.pump()
    w.advance(100.0)
    assert w.client.state is TurnState.CLOSED and not any(isinstance(e, Allocated) for e in w.events)


def test_a_restarted_server_is_noticed_by_any_request_and_by_an_early_refresh() -> None:
    """The server restarts and forgets the allocation: a CreatePermission gets 437 and the client allocates again
    (RFC 8656 §8); ``refresh()`` asks at once, as the ICE layer does when consent through the relay is lost."""
    for notice in ("permission", "refresh"):
        w = world()
        w.client.allocate(0.0)
        w.pump()
        first = w.client.relayed
        w.server = TurnServer(TurnServerConfig(SERVER, users={"alice": "secret"}), Ports(next_port=50000),
                              secret=b"k")  # a new server process: no allocations
        w.now = 5.0
        if notice == "permission":
            w.client.create_permission(w.now, PEER)
        else:
            w.client.refresh(w.now)
        w.pump()
        assert w.client.state is TurnState.ALLOCATED and w.client.relayed not in (first, None), notice
        assert len(w.server.allocations) == 1

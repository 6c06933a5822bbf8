"""The endpoint contract: what every sans-IO machine of the stack offers to whatever drives it.

An endpoint is a protocol state machine with no clock and no sockets (the pattern of aioquic's ``QuicConnection``).
Its driver -- the asyncio driver (:mod:`ice.aio.driver`), the in-memory network of the simulation, or a test with
a virtual clock -- feeds it and drains it:

* ``handle_datagram(now, local, remote, data)``: ``data`` arrived on the local transport address ``local`` from
  ``remote`` (for a framed TCP/TLS stream, one message per call, ``local``/``remote`` being the stream's ends);
* ``handle_timeout(now)``: called once ``now >= next_timeout()``; an endpoint treats an early call as a no-op for
  whatever is not yet due, but a driver never calls it early (it passes ``max(deadline, clock)``);
* after every input, the driver drains ``poll_transmit()`` until None and sends each
  :class:`~ice.stun.transaction.Transmit` from ``local`` (None: the endpoint's only, or default, socket) to
  ``remote``; drains ``next_event()`` until None; and re-arms its one timer at ``next_timeout()`` (None: no timer).

An endpoint may also offer ``handle_datagrams(now, local, batch)``: the ``(remote, data)`` pairs of ``batch``, all
received on ``local``, fed in order -- exactly as many ``handle_datagram`` calls would, and one input for the
driver, which calls it for a batch read at once; and ``poll_transmits()``: every queued transmit at once, in the
order ``poll_transmit`` would give them. The servers have both (their per-datagram fast paths run over the whole
batch); the ICE agent has ``poll_transmits``.

``now`` is seconds on any monotonic origin, the same for every call into one endpoint. Methods specific to a
machine (``IceAgent.send``, ``TurnClient.allocate``, ...) also take ``now`` where they need it; after calling one
the driver drains the endpoint as after any input.

The machines that meet it: :class:`~ice.agent.IceAgent`, :class:`~ice.agent.session.IceSession` (events tagged
with the stream index), :class:`~ice.relayed.RelayedAgent` (ICE over TURN, RFC 8445 §5.1.1.2),
:class:`~ice.turn.client.TurnClient` (a TURN client on its socket, RFC 8656),
:class:`~ice.turn.server.TurnServer`, :class:`~ice.stun.server.StunServer` and
:class:`~ice.stun.transaction.StunClientEndpoint`. Servers emit no events.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from ice.stun.attributes import Address
from ice.stun.transaction import Transmit

E_co = TypeVar("E_co", covariant=True)


class Endpoint(Protocol[E_co]):
    """A sans-IO endpoint whose events are of type ``E_co`` (``None``-typed for servers, which emit none)."""

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """Feed one datagram (or one framed stream message) received on ``local`` from ``remote``."""

    def handle_timeout(self, now: float) -> None:
        """Run every timer due at ``now`` (retransmissions, pacing, refreshes, expiries)."""

    def next_timeout(self) -> float | None:
        """When ``handle_timeout`` is next due; None when nothing waits on the clock."""

    def poll_transmit(self) -> Transmit | None:
        """The next datagram to send, or None when there is nothing (left) to send."""

    def next_event(self) -> E_co | None:
        """The next thing that happened, or None."""


__all__ = ["Endpoint", "Transmit"]

"""What an application tells the agent when its network changed (RFC 8445 §9): the input of
``IceAgent.network_changed`` and ``RelayedAgent.network_changed``."""

from __future__ import annotations

from dataclasses import dataclass

from ice.agent.tcp import TcpType
from ice.stun.attributes import Address


@dataclass(frozen=True)
class NetworkChange:
    """A local address left (or a new one came): which sockets are gone and which new ones the caller opened.

    The caller owns the sockets: it closes those at ``gone`` and opens the new ones before telling the agent (the
    sans-IO core never opens a socket)."""

    gone: tuple[Address, ...] = ()
    """Local addresses of sockets that no longer work (their IP left the interface): host sockets and TURN client
    sockets alike. Their candidates (host, the srflx/prflx ones based on them, the relayed one allocated from
    them) and pairs are forgotten."""
    hosts: tuple[tuple[int, Address], ...] = ()
    """(component, local address) of each new host socket: a host candidate (unless ``offer_hosts`` is False)
    and a server-reflexive request to each of ``stun_servers`` (RFC 8445 §5.1.1)."""
    turn: tuple[tuple[int, Address], ...] = ()
    """(component, local address) of each new socket a TURN allocation is made from (``RelayedAgent`` only)."""
    stun_servers: tuple[Address, ...] = ()
    offer_hosts: bool = True
    """False for a relay-only agent: the new sockets carry no host or server-reflexive candidates."""
    tcp_hosts: tuple[tuple[int, Address, TcpType], ...] = ()
    """(component, address, tcptype) of each new TCP host candidate (RFC 6544 §4.1): a passive or so one's
    listening socket, an active one's IP with port 0. Their server-reflexive TCP candidates come from Bindings
    over TCP the caller makes (``add_tcp_server_reflexive``); ``gone`` may list TCP bases too."""
    turn_tcp: tuple[tuple[int, Address], ...] = ()
    """(component, local address) of each new TCP or TLS connection a TURN TCP allocation (RFC 6062) is made on
    (``RelayedAgent`` only)."""


__all__ = ["NetworkChange"]

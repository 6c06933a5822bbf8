"""asyncio adapters over the sans-IO core: the only place that opens sockets and reads the loop clock.

The same public names as :mod:`ice` for the asyncio layer (each type has one home; these are re-exports)."""

from ice.aio.connection import CONNECT_TIMEOUT, Connection, describe_pair
from ice.aio.stun import BindingResult, stun_binding
from ice.aio.turn_client import TurnEndpoint
from ice.aio.turn_tcp_client import TurnTcpClient

__all__ = ["CONNECT_TIMEOUT", "BindingResult", "Connection", "TurnEndpoint", "TurnTcpClient", "describe_pair",
           "stun_binding"]

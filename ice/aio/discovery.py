"""NAT behaviour discovery with an RFC 5780 server: mapping (§4.3), filtering (§4.4) and hairpinning (§4.5)."""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ice.aio.stun import BindingResult, StunEndpoint, format_address, resolve
from ice.errors import StunTimeout, UserError
from ice.stun.attributes import Address, Attribute, ChangeRequest
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.transaction import RetransmissionConfig, TransactionSucceeded

FAST_PROBE = RetransmissionConfig(rto=0.1, rc=3, rm=4)
"""Probes expect silence as an answer, so they give up after 1.1 s instead of the default 39.5 s."""


class Behaviour(enum.Enum):
    """RFC 4787 §4.1 (mapping) and §5 (filtering) classes, as RFC 5780 names them."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


@dataclass
class BehaviourReport:
    local: Address
    mapped: Address
    behind_nat: bool
    mapping: Behaviour | None
    filtering: Behaviour | None
    hairpinning: bool | None
    server: Address
    other_address: Address
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["local"] = format_address(self.local)
        d["mapped"] = format_address(self.mapped)
        d["server"] = format_address(self.server)
        d["other_address"] = format_address(self.other_address)
        d["mapping"] = self.mapping.value if self.mapping else None
        d["filtering"] = self.filtering.value if self.filtering else None
        return d


def route_source(server: Address) -> str:
    """The local IP the kernel uses to reach ``server`` (a connected UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(server)
        return str(s.getsockname()[0])


async def _maybe_binding(ep: Endpoint, server: Address, change: ChangeRequest | None = None) -> Address | None:
    try:
        res = await ep.binding(server, [change] if change else [])
    except StunTimeout:
        return None
    return res.mapped


class Endpoint(Protocol):
    """What discovery needs from a socket (StunEndpoint; tests substitute an in-memory NAT)."""

    on_other: Callable[[bytes, Address], None] | None

    @property
    def local(self) -> Address: ...

    async def open(self, bind: Address = ..., connect: Address | None = ...) -> Endpoint: ...

    def close(self) -> None: ...

    async def binding(self, server: Address, attributes: Iterable[Attribute] = ()) -> BindingResult: ...

    async def request(self, message: Message, server: Address) -> TransactionSucceeded: ...


async def discover_behaviour(
    server: Address,
    bind: Address | None = None,
    config: RetransmissionConfig = FAST_PROBE,
    endpoint: Callable[[RetransmissionConfig], Endpoint] = StunEndpoint,
) -> BehaviourReport:
    """Classify the NAT between ``bind`` and ``server`` (which must have an alternate address, RFC 5780 §6)."""
    server = await resolve(server)
    if bind is None or bind[0] in ("0.0.0.0", "::"):
        # Bind to the source address the kernel would pick, so "mapped == local" really means "no NAT".
        bind = (route_source(server), bind[1] if bind else 0)
    notes: list[str] = []

    # Two sockets, both open from the start so they cannot share a local port (and so a NAT binding): the
    # mapping tests send to the alternate address and would open the holes the filtering tests look for, and
    # inbound flows let in by the filtering tests would be reused by the mapping tests' outbound packets.
    ep = await endpoint(config).open(bind)
    fep: Endpoint | None = None
    try:
        fep = await endpoint(config).open((bind[0], 0))
        first = await ep.binding(server)
        if first.other_address is None:
            raise UserError(
                f"{format_address(server)} sent no OTHER-ADDRESS, so it cannot classify a NAT: start it with two "
                "addresses (icelab server stun --listen IP1:P1 --alt IP2:P2)"
            )
        other = first.other_address
        local = ep.local
        m1 = first.mapped
        behind_nat = m1 != local

        # Mapping (RFC 5780 §4.3): test II to the other IP (primary port), test III to the other IP and port.
        mapping: Behaviour | None
        if not behind_nat:
            mapping = Behaviour.ENDPOINT_INDEPENDENT
            notes.append("the mapped address equals the local address: no NAT on this path")
        else:
            m2 = (await ep.binding((other[0], server[1]))).mapped
            if m2 == m1:
                mapping = Behaviour.ENDPOINT_INDEPENDENT
            else:
                m3 = (await ep.binding(other)).mapped
                mapping = Behaviour.ADDRESS_DEPENDENT if m3 == m2 else Behaviour.ADDRESS_AND_PORT_DEPENDENT

        # Filtering (RFC 5780 §4.4) on the second socket: test II asks for an answer from the other IP and port,
        # test III from the other port only.
        fmapped = (await fep.binding(server)).mapped
        if await _maybe_binding(fep, server, ChangeRequest(change_ip=True, change_port=True)) is not None:
            filtering = Behaviour.ENDPOINT_INDEPENDENT
        elif await _maybe_binding(fep, server, ChangeRequest(change_ip=False, change_port=True)) is not None:
            filtering = Behaviour.ADDRESS_DEPENDENT
        else:
            filtering = Behaviour.ADDRESS_AND_PORT_DEPENDENT

        # Hairpinning (RFC 5780 §4.5), also on the second socket.
        hairpinning = await _hairpin(fep, fmapped, config) if behind_nat else None
        if hairpinning is None:
            notes.append("hairpinning not tested: no NAT on this path")
    finally:
        ep.close()
        if fep is not None:
            fep.close()
    return BehaviourReport(local, m1, behind_nat, mapping, filtering, hairpinning, server, other, notes)


async def _hairpin(ep: Endpoint, mapped: Address, config: RetransmissionConfig) -> bool:
    """RFC 5780 §4.5: send a Binding request to our own mapped address; hairpinning works if it comes back."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[object] = loop.create_future()
    req = Message(Method.BINDING, MessageClass.REQUEST)

    def other(data: bytes, source: Address) -> None:
        try:
            msg = parse(data)
        except ValueError:
            return
        if msg.transaction_id == req.transaction_id and not seen.done():
            seen.set_result(None)

    ep.on_other = other
    task: asyncio.Future[object] = asyncio.ensure_future(ep.request(req, mapped))
    try:
        await asyncio.wait([seen, task], return_when=asyncio.FIRST_COMPLETED)
        return seen.done()
    finally:
        ep.on_other = None
        task.cancel()
        seen.cancel()
        await asyncio.gather(task, return_exceptions=True)

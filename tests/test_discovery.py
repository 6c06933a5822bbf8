"""RFC 5780 behaviour discovery against an in-memory RFC 4787 NAT, for every mapping x filtering pair.

The real kernel NATs verify the same code in the lab tier (the NAT-lab probe); here the NAT is a small model so
every branch of the classification runs in milliseconds and the expected answer is the configured behaviour.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from ice.aio.discovery import Behaviour, discover_behaviour
from ice.aio.stun import BindingResult
from ice.errors import StunTimeout, UserError
from ice.stun.attributes import Address, Attribute, ChangeRequest
from ice.stun.message import Message
from ice.stun.transaction import RetransmissionConfig, TransactionSucceeded

PRIMARY = ("198.51.100.1", 3478)
ALTERNATE = ("198.51.100.2", 3479)
PUBLIC_IP = "203.0.113.1"
EIM, ADM, APDM = Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_DEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT


@dataclass
class ModelNat:
    """RFC 4787 §4.1 mapping and §5 filtering, with optional hairpinning (§6); None mapping = no NAT."""

    mapping: Behaviour | None
    filtering: Behaviour
    hairpin: bool = False
    other_address: bool = True
    bindings: dict[tuple[object, ...], int] = field(default_factory=dict)
    contacted: set[tuple[int, str, int]] = field(default_factory=set)
    ports: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))

    def outbound(self, local: Address, dst: Address) -> Address:
        if self.mapping is None:
            return local
        key: tuple[object, ...] = {
            EIM: (local,),
            ADM: (local, dst[0]),
            APDM: (local, dst),
        }[self.mapping]
        if key not in self.bindings:
            self.bindings[key] = next(self.ports)
        port = self.bindings[key]
        self.contacted.add((port, *dst))
        return (PUBLIC_IP, port)

    def inbound_allowed(self, mapped: Address, src: Address) -> bool:
        if self.mapping is None or self.filtering is EIM:
            return True
        if self.filtering is ADM:
            return any(p == mapped[1] and ip == src[0] for p, ip, _ in self.contacted)
        return (mapped[1], *src) in self.contacted


class ModelEndpoint:
    def __init__(self, nat: ModelNat) -> None:
        self.nat = nat
        self.on_other = None
        self._local: Address = ("10.0.0.2", 0)
        self._mapped: Address | None = None

    @property
    def local(self) -> Address:
        return self._local

    async def open(self, bind: Address = ("0.0.0.0", 0), connect: Address | None = None) -> ModelEndpoint:
        self._local = (bind[0], bind[1] or next(self.nat.ports) - 20000)
        return self

    def close(self) -> None:
        pass

    async def binding(self, server: Address, attributes: Iterable[Attribute] = ()) -> BindingResult:
        mapped = self.nat.outbound(self._local, server)
        self._mapped = mapped
        change = next((a for a in attributes if isinstance(a, ChangeRequest)), ChangeRequest())
        local_server = server
        ip = (ALTERNATE[0] if server[0] == PRIMARY[0] else PRIMARY[0]) if change.change_ip else server[0]
        port = (ALTERNATE[1] if server[1] == PRIMARY[1] else PRIMARY[1]) if change.change_port else server[1]
        source = (ip, port)
        if not self.nat.inbound_allowed(mapped, source):
            raise StunTimeout("filtered by the NAT")
        other = (ALTERNATE[0] if local_server[0] == PRIMARY[0] else PRIMARY[0],
                 ALTERNATE[1] if local_server[1] == PRIMARY[1] else PRIMARY[1])
        return BindingResult(self._local, server, mapped, source, other if self.nat.other_address else None,
                             "model", 0.001, 1, source)

    async def request(self, message: Message, server: Address) -> TransactionSucceeded:
        if server == self._mapped and self.nat.hairpin and self.on_other is not None:
            self.on_other(message.encode(), self._mapped)
            await asyncio.Event().wait()  # our own request never gets a response; discovery cancels us
        raise StunTimeout("no hairpin")


def discover(nat: ModelNat) -> object:
    return asyncio.run(discover_behaviour(PRIMARY, ("10.0.0.2", 5000), RetransmissionConfig(),
                                          endpoint=lambda cfg: ModelEndpoint(nat)))


@pytest.mark.parametrize("hairpin", [False, True])
@pytest.mark.parametrize("filtering", [EIM, ADM, APDM], ids=["eif", "adf", "apdf"])
@pytest.mark.parametrize("mapping", [EIM, ADM, APDM], ids=["eim", "adm", "apdm"])
def test_every_rfc4787_combination_is_classified(mapping: Behaviour, filtering: Behaviour, hairpin: bool) -> None:
    rep = discover(ModelNat(mapping, filtering, hairpin))
    assert (rep.behind_nat, rep.mapping, rep.filtering, rep.hairpinning) == (True, mapping, filtering, hairpin)
    assert rep.mapped[0] == PUBLIC_IP and rep.other_address == ALTERNATE


def test_no_nat() -> None:
    rep = discover(ModelNat(None, EIM))
    assert (rep.behind_nat, rep.mapping, rep.filtering, rep.hairpinning) == (False, EIM, EIM, None)
    assert "no NAT on this path" in rep.notes[0]


def test_server_without_other_address_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--alt"):
        discover(ModelNat(EIM, EIM, other_address=False))

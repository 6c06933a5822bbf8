"""STUN (RFC 8489): a sans-IO codec, credentials, and a retransmission machine. No sockets, no clock.

Attribute classes live in :mod:`ice.stun.attributes`; the most used names are re-exported here.
"""

from ice.stun.attributes import ATTRIBUTES, Address, Attribute, AttributeType, UnknownAttribute
from ice.stun.integrity import (
    IntegrityKey,
    KeyAlgorithm,
    StringPrep,
    long_term_key,
    opaque_string,
    saslprep,
    short_term_key,
    userhash,
)
from ice.stun.message import Integrity, Message, MessageClass, Method, is_stun, new_transaction_id, parse

__all__ = [
    "ATTRIBUTES",
    "Address",
    "Attribute",
    "AttributeType",
    "Integrity",
    "IntegrityKey",
    "KeyAlgorithm",
    "Message",
    "MessageClass",
    "Method",
    "StringPrep",
    "UnknownAttribute",
    "is_stun",
    "long_term_key",
    "new_transaction_id",
    "opaque_string",
    "parse",
    "saslprep",
    "short_term_key",
    "userhash",
]

"""icelab: a sans-IO ICE/STUN/TURN stack (RFC 8445, 8489, 8656) and the lab that proves it works."""

__version__ = "0.1.0"

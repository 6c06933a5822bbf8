"""TURN (RFC 8656): a sans-IO server core (and, with the TURN issue, the client). No sockets, no clock."""

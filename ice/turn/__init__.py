"""TURN (RFC 8656): a sans-IO server core and client. No sockets, no clock."""

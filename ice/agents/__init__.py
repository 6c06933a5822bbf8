"""ICE agents as processes on the agent protocol (docs/agent-protocol.md): the driver of one agent, two agents
wired to each other, the built-in adapters and the conformance check."""

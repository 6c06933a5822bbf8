"""The emulated-network lab: NAT behaviours as data, compiled to netfilter rules, inside Mininet topologies.

``ice.lab.nat`` is pure (no root, no processes): behaviours, presets and the rules compiler. The parts that build
namespaces import Mininet lazily, so the rest of icelab never needs it.
"""

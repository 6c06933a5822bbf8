"""The built-in topology modules (one file each; shipped inside the package). See ice.topology.registry."""

"""Reaching nodes from the laptop: the Transport interface, its local and SSH implementations, and
the node checks built on them."""

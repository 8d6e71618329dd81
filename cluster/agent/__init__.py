"""Code that runs ON a node with only the standard library: spawn (detached ranks) and the node
probe with its macOS and Linux parsers. Nothing here may import MLX, numpy, asyncssh or any other
boltring package (tests/unit/test_agent_imports.py proves it), so it works on a node whose
environment is half set up."""

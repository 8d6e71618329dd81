"""Node and link checks, run from the laptop against every node."""

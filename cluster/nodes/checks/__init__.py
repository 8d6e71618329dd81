"""Node checks (`boltring check`): run.py orchestrates; see its docstring for the other modules."""

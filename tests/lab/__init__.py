"""The netns test lab: test hosts with sshd on this Linux machine (see netns.py)."""

from .netns import Host, Lab, LabError, cleanup_stale, lab_available

__all__ = ["Host", "Lab", "LabError", "cleanup_stale", "lab_available"]

"""The macOS command outputs under tests/samples/macos, and the probe commands they answer."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples" / "macos"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def mac_commands(tb: str = "sp_thunderbolt_tb4_mini1.json") -> dict[tuple[str, ...], str]:
    """nodeprobe's macOS commands (argv) -> the sample file that answers each on a healthy mini."""
    return {
        ("sysctl", "-n", "machdep.cpu.brand_string", "hw.memsize"): "sysctl_chip_memory.txt",
        ("system_profiler", "SPHardwareDataType", "-json"): "sp_hardware.json",
        ("vm_stat",): "vm_stat.txt",
        ("networksetup", "-listallhardwareports"): "networksetup_listallhardwareports.txt",
        ("networksetup", "-getinfo", "Thunderbolt Bridge"): "networksetup_getinfo_manual.txt",
        ("ifconfig",): "ifconfig_bridge0_active.txt",
        ("netstat", "-rn", "-f", "inet"): "netstat_rn.txt",
        ("route", "-n", "get", "default"): "route_get_default.txt",
        ("system_profiler", "SPThunderboltDataType", "-json"): tb,
    }

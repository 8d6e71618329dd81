"""The README's paper model of a data-parallel step on 1-4 Mac minis over Thunderbolt.

    python tests/bench/step_model.py [--tokens 8192] [--tflops 4]

Every input is an assumption, named here and in the README (nothing is measured on a Mac):
- compute per step = 6 x params x tokens per node / effective FLOP/s (--tflops; 4 TFLOP/s is an
  assumed ~50% of an M4 Pro GPU's fp32 peak), backward = 2/3 of it;
- link: iperf3 goodput per cable and direction (Thunderbolt 4: 20-30 Gbit/s, 5: 52-64 Gbit/s,
  field reports), of which the ring gets ETA = 0.9 (it got 94-99% of plain TCP on the shaped
  test links here);
- ring cabling, one cable per neighbour: each cable direction carries (n-1)/n of the gradient
  bytes for n >= 3 (our ring sends half each way), and all of them for n = 2 (one cable);
- overlap hides communication behind the backward pass except the last bucket (32 MiB);
- bf16 wire: half the bytes; the host CPU keeps up (the copies cost ~0.3 ns per byte moved on
  this VM's cores, so a TB5 ring keeps ~3 performance cores of a mini busy).
"""

from __future__ import annotations

import argparse

ETA = 0.9
BUCKET = 32 << 20
LINKS = {"TB4": (20, 30), "TB5": (52, 64)}  # Gbit/s, usable TCP
GRADS = {"100 MB (25 M params)": 25e6, "1 GB (250 M)": 250e6, "4 GB (1 B)": 1e9}


def comm_s(n: int, grad_bytes: float, gbit: float) -> float:
    if n == 1:
        return 0.0
    per_cable = grad_bytes if n == 2 else (n - 1) / n * grad_bytes
    return per_cable / (ETA * gbit * 1e9 / 8)


def step_s(
    n: int, params: float, tokens: int, tflops: float, gbit: float, overlap: bool, bf16: bool
) -> float:
    compute = 6 * params * tokens / (tflops * 1e12)
    grad = params * (2 if bf16 else 4)
    comm = comm_s(n, grad, gbit)
    if not overlap or n == 1:
        return compute + comm
    fwd, bwd = compute / 3, 2 * compute / 3
    last = comm_s(n, min(BUCKET * (0.5 if bf16 else 1), grad), gbit)
    return fwd + max(bwd, comm - last) + last


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=8192, help="tokens per node per step")
    p.add_argument("--tflops", type=float, default=4.0, help="effective FLOP/s of one mini, in T")
    a = p.parse_args()
    print(f"tokens/node/step {a.tokens}, {a.tflops} TFLOP/s effective, ring efficiency {ETA}; link low-high")
    print(
        "| gradients | link | 1 mini | 4 minis fp32 | +overlap | bf16 | bf16+overlap | speed-up 2/3/4, fp32 | bf16+overlap |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for gname, params in GRADS.items():
        for link, (lo, hi) in LINKS.items():

            def t(n, overlap, bf16, gbit, params=params):
                return step_s(n, params, a.tokens, a.tflops, gbit, overlap, bf16)

            cells = [f"{t(1, False, False, hi):.2f} s"]
            for overlap, bf16 in ((False, False), (True, False), (False, True), (True, True)):
                cells.append(f"{t(4, overlap, bf16, hi):.2f}–{t(4, overlap, bf16, lo):.2f}")
            for overlap, bf16 in ((False, False), (True, True)):
                ups = [f"{n * t(1, False, False, hi) / t(n, overlap, bf16, lo):.1f}" for n in (2, 3, 4)]
                cells.append("/".join(ups))
            print(f"| {gname} | {link} | " + " | ".join(cells) + " |")
    for link, (lo, _hi) in LINKS.items():
        for bf16 in (False, True):
            # comm/compute does not depend on the model size: both scale with the parameters
            ratio = comm_s(4, 2 if bf16 else 4, lo) / (6 / (a.tflops * 1e12))
            print(
                f"- {link} ({lo} Gbit/s), {'bf16' if bf16 else 'fp32'} wire: communication = compute at "
                f"{ratio:.0f} tokens per node per step (4 minis)"
            )


if __name__ == "__main__":
    main()

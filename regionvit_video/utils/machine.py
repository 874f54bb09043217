"""What machine the numbers come from: CPU model, the instruction sets the kernels pick, threads.

Float32 results differ slightly between CPUs because PyTorch's own kernels (ATen), MKL and oneDNN each
pick code for the best instruction set they find (AVX2, AVX-512, AVX512-BF16, AMX), and each sums in
its own order. Test reports and benchmark tables name the machine with :func:`describe`, and an
AVX-512 machine can compute what an AVX2-only one does by holding all three libraries to AVX2
(:data:`AVX2_KERNELS`; ATen alone is not enough, MKL and oneDNN choose their own GEMM kernels).

``python -m regionvit_video.utils.machine`` prints the description;
``python -m regionvit_video.utils.machine --avx2-kernels auto -- CMD ...`` runs CMD again under the AVX2
constraint when the CPU has AVX-512 (``make test`` does this for the tests marked ``numerics``).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from functools import lru_cache

# The instruction-set flags (as /proc/cpuinfo names them) that change which kernels run.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Environment that holds ATen, MKL and oneDNN to their AVX2 kernels (read when each library loads).
AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``{"model": str, "flags": set[str]}`` from /proc/cpuinfo (Linux); elsewhere the model from
    :mod:`platform` and no flags."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": flags}


def has_native_bf16() -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16 or AMX): bf16 autocast is fast there; on other
    CPUs PyTorch emulates bf16 and it is slower than float32."""
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe() -> list[str]:
    """Lines naming the CPU, its kernel-relevant flags, torch, threads and the ISA each kernel library may use."""
    import torch

    info = cpu_info()
    flags = [f for f in ISA_FLAGS if f in info["flags"]]
    missing = [f for f in ISA_FLAGS if f not in info["flags"]]
    constraint = ", ".join(f"{k}={os.environ[k]}" for k in AVX2_KERNELS if k in os.environ) or "none"
    return [
        f"cpu: {info['model']}, {os.cpu_count()} cores; flags: {' '.join(flags) or 'none'}"
        + (f" (not: {' '.join(missing)})" if missing else ""),
        f"torch {torch.__version__}: {torch.get_num_threads()} threads, ATen kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"MKL {'on' if torch.backends.mkl.is_available() else 'off'}, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}; "
        f"kernel ISA constraint: {constraint}",
    ]


def run_on_avx2_kernels(command: list[str], when: str = "auto") -> int:
    """Run ``command`` with :data:`AVX2_KERNELS` set; returns its exit status.

    Args:
        command: the program and its arguments.
        when: ``"auto"``: only if the CPU has AVX-512 (on an AVX2-only CPU the constraint changes nothing,
            the kernels already were the AVX2 ones); ``"always"``; ``"never"``.
    """
    if when not in ("auto", "always", "never"):
        raise ValueError(f"when must be 'auto', 'always' or 'never', got {when!r}")
    avx512 = "avx512f" in cpu_info()["flags"]
    if when == "never" or (when == "auto" and not avx512):
        print("AVX2 kernel path: not run again (this CPU has no AVX-512: its kernels are the AVX2 ones)")
        return 0
    print(f"AVX2 kernel path: {' '.join(f'{k}={v}' for k, v in AVX2_KERNELS.items())} {' '.join(command)}",
          flush=True)
    return subprocess.call(command, env={**os.environ, **AVX2_KERNELS})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m regionvit_video.utils.machine", description=__doc__.split("\n")[0])
    parser.add_argument("--avx2-kernels", choices=("auto", "always", "never"), default="auto",
                        help="with '-- CMD ...': when to run CMD under the AVX2 kernel constraint (auto: on AVX-512 CPUs)")
    args = parser.parse_args(own)
    if not command:
        print("\n".join(describe()))
        return 0
    return run_on_avx2_kernels(command, args.avx2_kernels)


if __name__ == "__main__":
    sys.exit(main())

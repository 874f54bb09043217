"""The machine description in test reports and the second pass on the AVX2 kernel path."""
import subprocess
import sys

import pytest

from regionvit_video.utils import machine


def test_description_names_cpu_flags_threads_and_kernels():
    lines = machine.describe()
    assert lines[0].startswith("cpu: ") and "flags:" in lines[0]
    for flag in machine.ISA_FLAGS:  # every flag is said to be there or not
        assert flag in lines[0]
    assert "threads" in lines[1] and "ATen kernels" in lines[1] and "kernel ISA constraint" in lines[1]


def test_avx2_constraint_reaches_every_kernel_library(capsys):
    probe = ("import os, torch; print(torch.backends.cpu.get_cpu_capability(), "
             "os.environ['MKL_ENABLE_INSTRUCTIONS'], os.environ['ONEDNN_MAX_CPU_ISA'])")
    out = subprocess.run([sys.executable, "-m", "regionvit_video.utils.machine", "--avx2-kernels", "always", "--",
                          sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    aten = "AVX2" if "avx2" in machine.cpu_info()["flags"] else "DEFAULT"  # a CPU without AVX2 falls back
    assert out.splitlines()[-1] == f"{aten} AVX2 AVX2"  # ATen really runs its AVX2 kernels
    assert machine.run_on_avx2_kernels([sys.executable, "-c", "raise SystemExit(3)"], "always") == 3
    assert machine.run_on_avx2_kernels([sys.executable, "-c", "raise SystemExit(3)"], "never") == 0
    expected = 3 if "avx512f" in machine.cpu_info()["flags"] else 0
    assert machine.run_on_avx2_kernels([sys.executable, "-c", "raise SystemExit(3)"], "auto") == expected
    with pytest.raises(ValueError, match="auto"):
        machine.run_on_avx2_kernels(["true"], "sometimes")

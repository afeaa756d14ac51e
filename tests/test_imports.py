"""Importing the core packages never imports torch (only validate/ may, lazily)."""

import subprocess
import sys


def test_core_packages_do_not_import_torch():
    code = "import sys, einsum, workloads, simulator, mappers, attnscope.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""`autogan_fast.kernels` stands alone: it depends on torch and triton only, never on the rest of the package."""

import json
import subprocess
import sys


def test_importing_the_kernels_loads_no_other_autogan_fast_module():
    """In a fresh interpreter (this one has imported everything already), `import autogan_fast.kernels`
    may load the package's `__init__` (Python runs it first) and the kernels' own modules, nothing else."""
    code = ("import json, sys; import autogan_fast.kernels; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('autogan_fast'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    others = [m for m in loaded if m != "autogan_fast" and not m.startswith("autogan_fast.kernels")]
    assert "autogan_fast.kernels" in loaded and others == [], others

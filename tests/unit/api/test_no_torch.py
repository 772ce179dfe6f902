"""The API gateway and the worker shells must not import torch (the torch core loads lazily)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
{imports}
heavy = sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "from spdlab.api.main import create_app\napp = create_app()\napp.openapi()",
        "import spdlab.gpu_worker.app",
        "import spdlab.llm_worker.app",
    ],
    ids=["api", "gpu_worker_shell", "llm_worker_shell"],
)
def test_module_does_not_import_torch(imports: str):
    out = subprocess.run([sys.executable, "-c", CHECK.format(imports=imports)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""

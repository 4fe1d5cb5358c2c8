"""The GPU benchmark: preset best-gpu on one CUDA device, printing test accuracy and time.

    python benchmarks/best_gpu.py [--data CIFAR10.tar.gz] [--set KEY=VALUE ...]

Same code as the CPU benchmark (benchmarks/best_mlp.py): the whole training
split lives on the device, bf16 mixed precision, the goal is >= 75% on the
10,000 test images in under 5 minutes of training on one H100.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from best_mlp import main  # noqa: E402

if __name__ == "__main__":
    from fcnet.errors import FcnetError

    try:
        main(default_preset="best-gpu")
    except FcnetError as err:
        print(f"best_gpu: error: {err}", file=sys.stderr)
        sys.exit(2)

"""LeRobot interoperability: dataset conversion both ways (``vla convert``) and a policy adapter.

Nothing here may reach the Hugging Face Hub: every dataset and checkpoint is read from and written
to local folders. Importing this package therefore switches the Hub clients to offline mode (unless
the caller already chose), before any lerobot module is imported.

- :mod:`vla.interop.from_lerobot`: a local LeRobot v3.0 dataset -> trajectory store;
- :mod:`vla.interop.to_lerobot`: trajectory store -> LeRobot v3.0 dataset (videos encoded);
- :mod:`vla.interop.lerobot_policy`: any lerobot ``PreTrainedPolicy`` checkpoint behind our policy
  protocol (``spec`` and stateless ``predict_chunks``);
- :mod:`vla.interop.loader_bench`: samples/s of ``LeRobotDataset`` for ``scripts/bench_data.py``.
"""

from __future__ import annotations

import os

# huggingface_hub and datasets read these once, at import: set them before lerobot pulls them in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

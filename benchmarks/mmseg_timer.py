"""Times MMSegmentation 1.2.2 forwards on request; runs in the parity virtualenv.

bench_model.py starts this once and sends one JSON command per line on stdin, so that
MMSeg's forwards can be interleaved with segnext_hub's in the same run (on a shared
machine, load drifts; alternating the two keeps the comparison fair). The model is built
by tests/parity/mmseg_worker.py's own functions, from the config the wheel ships.

Commands: {"op": "load", "variant", "md_r", "weights", "shape", "threads"} and
{"op": "time"} (an eval forward); {"op": "load_train", ... "batch"} and {"op": "time_train"}
(one training iteration: loss, backward, optimiser step; bench_train.py); each answer is one
line starting with REPLY_PREFIX, then JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPLY_PREFIX = "@@mmseg-timer "

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity"))
import mmseg_worker  # noqa: E402  (stubs mmcv._ext and registers MMSeg's modules)
import torch  # noqa: E402


def _reply(payload: dict) -> None:
    sys.stdout.write(REPLY_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> None:
    model = x = wrapper = images = samples = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "load":
            torch.set_num_threads(cmd["threads"])
            model = mmseg_worker.build_model(mmseg_worker.build_config(cmd))
            model.load_state_dict(torch.load(cmd["weights"]), strict=True)
            model.eval()
            x = torch.randn(cmd["shape"], generator=torch.Generator().manual_seed(0))
            _reply({"ok": True, "threads": torch.get_num_threads(), "torch": torch.__version__})
        elif cmd["op"] == "time":
            torch.manual_seed(0)  # as the worker's benchmark does: not timed
            with torch.no_grad():
                start = time.perf_counter()
                model(x, mode="tensor")
                _reply({"seconds": time.perf_counter() - start})
        elif cmd["op"] == "load_train":
            torch.set_num_threads(cmd["threads"])
            model, wrapper = mmseg_worker.build_training(mmseg_worker.build_config(cmd), cmd["weights"])
            images, labels = torch.load(cmd["batch"])
            samples = mmseg_worker.data_samples(labels)
            _reply({"ok": True, "threads": torch.get_num_threads(), "torch": torch.__version__})
        elif cmd["op"] == "time_train":
            torch.manual_seed(0)
            start = time.perf_counter()
            loss, _ = model.parse_losses(model.loss(images, samples))
            wrapper.update_params(loss)  # backward, step, zero_grad: the runner's iteration
            _reply({"seconds": time.perf_counter() - start, "loss": loss.item()})
        else:
            _reply({"error": f"unknown op {cmd['op']!r}"})


if __name__ == "__main__":
    main()

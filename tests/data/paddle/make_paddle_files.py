"""Write small, REAL PaddlePaddle files (``paddle.save``) for the safe Paddle reader's tests.

Run it in the PaddleSeg parity virtualenv (``make paddle-venv``; it imports paddle, the project
itself never does)::

    .venv-paddle/bin/python tests/data/paddle/make_paddle_files.py

It writes, beside itself:

* ``tiny_state.pdparams``: ``paddle.save(layer.state_dict(), ...)`` of a tiny layer holding the
  parameter kinds a PaddleSeg SegNeXt file holds (a convolution, a BatchNorm2D with its
  ``_mean``/``_variance``, a GroupNorm, a ``[C, 1, 1]`` parameter made with
  ``paddle.create_parameter`` like MSCAN's layer scales), with a fixed seed. ``paddle.save``
  adds Paddle's ``StructuredToParameterName@@`` table itself.
* ``tiny_backbone.zip``: that file as ``tiny_backbone/model.pdparams`` behind a first folder
  entry, the shape ``paddleseg.utils.download_pretrained_model`` extracts and reads.
* ``expected.json``: per array its dtype, shape and values (taken from the layer, not the file),
  the internal name of each (what the table should map it to), and the
  versions that wrote the files.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import paddle
from paddle import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Tiny(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2D(4)
        self.gn = nn.GroupNorm(2, 4)
        self.layer_scale_1 = paddle.create_parameter([4, 1, 1], "float32")


def main() -> None:
    paddle.seed(20230404)
    rng = np.random.default_rng(20230404)
    layer = Tiny()
    for name, param in layer.named_parameters():
        param.set_value(rng.standard_normal(param.shape).astype("float32"))
    layer.bn._mean.set_value(rng.standard_normal([4]).astype("float32"))
    layer.bn._variance.set_value(rng.uniform(0.5, 2.0, [4]).astype("float32"))
    state = layer.state_dict()
    path = os.path.join(HERE, "tiny_state.pdparams")
    paddle.save(state, path)
    with zipfile.ZipFile(os.path.join(HERE, "tiny_backbone.zip"), "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("tiny_backbone/"), b"")
        archive.write(path, "tiny_backbone/model.pdparams")
    expected = {
        "written_by": {"paddlepaddle": paddle.__version__, "numpy": np.__version__},
        "arrays": {key: {"dtype": str(value.numpy().dtype), "shape": list(value.shape),
                         "values": value.numpy().ravel().tolist()} for key, value in state.items()},
        "name_table": {key: value.name for key, value in state.items()},
    }
    with open(os.path.join(HERE, "expected.json"), "w") as handle:
        json.dump(expected, handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    main()

"""Write ultralytics' state-dict keys and shapes for a config, the golden file of tests/models/test_state_dict.py.

Needs ``yolov5==7.0.14`` (see compare_reference.py); run as
``python benchmarks/dump_reference_keys.py yolov5n > tests/models/data/ultralytics_keys_yolov5n.txt``.
"""

import sys
from importlib import resources

from yolov5.models.yolo import DetectionModel

name = sys.argv[1]
model = DetectionModel(str(resources.files("yolo_slim.models") / "configs" / f"{name}.yaml"), ch=3, nc=80)
for key, tensor in model.state_dict().items():
    print(key, "x".join(str(d) for d in tensor.shape) or "scalar")

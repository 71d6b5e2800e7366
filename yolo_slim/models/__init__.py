"""The YOLOv5 graph: yaml parsing into a spec, blocks, the network, checkpoints, size and cost.

Knows nothing of pruning, Lightning or Hydra.
"""

from yolo_slim.models.checkpoint import CheckpointFormatError, UnsafeCheckpointError, load_pretrained, load_yolov5
from yolo_slim.models.fuse import fuse_batchnorm
from yolo_slim.models.info import count_gflops, count_parameters, model_info
from yolo_slim.models.registry import BlockType, Row, block_types, register_block, unregister_block
from yolo_slim.models.spec import LayerSpec, ModelSpec
from yolo_slim.models.yaml_config import load_model_yaml, parse_model_yaml, shipped_configs
from yolo_slim.models.yolo import YOLOv5

__all__ = [
    "BlockType",
    "CheckpointFormatError",
    "LayerSpec",
    "ModelSpec",
    "Row",
    "UnsafeCheckpointError",
    "YOLOv5",
    "block_types",
    "count_gflops",
    "count_parameters",
    "fuse_batchnorm",
    "load_model_yaml",
    "load_pretrained",
    "load_yolov5",
    "model_info",
    "parse_model_yaml",
    "register_block",
    "shipped_configs",
    "unregister_block",
]

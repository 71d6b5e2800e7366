"""Network slimming core, plain torch: channel groups, sparsity, pruning plans, compaction, reports.

Uses the graph (:mod:`yolo_slim.models`) and nothing above it: no Lightning, no data.
"""

from yolo_slim.slim.compact import compact, pruned_spec
from yolo_slim.slim.channels import ChannelTracer
from yolo_slim.slim.graph import ChannelGraph, ChannelGroup, Consumer, Segment, trace_channels
from yolo_slim.slim.plan import PruningPlan, group_importance, plan_pruning
from yolo_slim.slim.report import SlimReport, format_report, report
from yolo_slim.slim.rules import WHOLE, SlimRule, register_slim_rule, slim_rules, unregister_slim_rule
from yolo_slim.slim.sparsity import SparsityTarget, add_bn_l1_grad, sparsity_strength, sparsity_target

channel_groups = trace_channels  # the name the public API documents

__all__ = [
    "WHOLE",
    "ChannelGraph",
    "ChannelTracer",
    "ChannelGroup",
    "Consumer",
    "PruningPlan",
    "Segment",
    "SlimReport",
    "SlimRule",
    "SparsityTarget",
    "add_bn_l1_grad",
    "channel_groups",
    "compact",
    "format_report",
    "group_importance",
    "plan_pruning",
    "pruned_spec",
    "register_slim_rule",
    "report",
    "slim_rules",
    "sparsity_strength",
    "sparsity_target",
    "trace_channels",
    "unregister_slim_rule",
]

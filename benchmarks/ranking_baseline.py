"""Does ranking channels by |γ| pick better channels than chance? One checkpoint, pruned twice to the same widths.

    python benchmarks/ranking_baseline.py --ckpt RUN/checkpoints/last.ckpt [--ratio 0.6] [--finetune-epochs 10]

The |γ| plan comes from ``plan_pruning(ratio=...)``; the random plan keeps, in every group, as
many channels as the |γ| plan does, drawn uniformly (seeded). So the two pruned models have the
same architecture, parameters and FLOPs, and differ only in which channels survive. Each is
validated right after pruning and after ``--finetune-epochs`` of fine-tuning on the checkpoint's
own data and training settings (what ``python -m yolo_slim prune prune.finetune_epochs=N`` does),
from the same seed. The checkpoint should be sparse-trained (e.g. ``python -m yolo_slim train
+prune=sparse 'prune.epochs=[]'``); a dense one measures the ranking without sparsity.
"""

from __future__ import annotations

import argparse
import logging

import lightning as L
import torch

from yolo_slim.data import AugmentConfig, YOLODataModule
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models import count_gflops, count_parameters
from yolo_slim.slim import PruningPlan, compact, plan_pruning


def random_plan_like(plan: PruningPlan, seed: int) -> PruningPlan:
    """Same kept count per group as ``plan``, channels drawn uniformly at random."""
    generator = torch.Generator().manual_seed(seed)
    keep = {name: sorted(torch.randperm(plan.sizes[name], generator=generator)[:len(kept)].tolist())
            for name, kept in plan.keep.items()}
    return PruningPlan(keep=keep, policy=plan.policy, threshold=float("nan"), sizes=dict(plan.sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)

    def fresh() -> YOLOv5Module:
        return YOLOv5Module.load_from_checkpoint(args.ckpt, map_location="cpu")

    reference = fresh()
    datamodule = YOLODataModule(data=reference.hparams.data, imgsz=reference.hparams.imgsz,
                                batch_size=args.batch_size, workers=args.workers, augment=AugmentConfig())
    gamma_plan = plan_pruning(reference.inference_model, ratio=args.ratio, imgsz=reference.hparams.imgsz)
    plans = {"|gamma|": gamma_plan, "random": random_plan_like(gamma_plan, args.seed)}
    rows = []
    for label, plan in plans.items():
        module = fresh()
        module.set_network(compact(module.inference_model, plan))
        L.seed_everything(args.seed, workers=True)
        trainer = L.Trainer(accelerator="cpu", max_epochs=args.finetune_epochs, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        right_after = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        trainer.fit(module, datamodule=datamodule)
        finetuned = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        network = module.inference_model
        rows.append((label, count_parameters(network), count_gflops(network, reference.hparams.imgsz),
                     right_after, finetuned))
    print(f"{args.ckpt}: ratio {args.ratio}, {gamma_plan.removed_channels} of {gamma_plan.total_channels} channels "
          f"removed, fine-tune {args.finetune_epochs} epochs")
    print(f"{'ranking':>8} {'params':>9} {'GFLOPs':>7} {'right after mAP50 / mAP':>24} {'fine-tuned mAP50 / mAP':>23}")
    for label, params, gflops, right_after, finetuned in rows:
        print(f"{label:>8} {params:>9,} {gflops:>7.3f} {right_after['val/map50']:>14.3f} / {right_after['val/map']:.3f} "
              f"{finetuned['val/map50']:>13.3f} / {finetuned['val/map']:.3f}")


if __name__ == "__main__":
    main()

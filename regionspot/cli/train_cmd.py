"""``regionspot train CONFIG.yaml [--set KEY=VALUE ...] [--resume]`` (also under ``torchrun -m regionspot``).

The older positional form ``regionspot train CONFIG.yaml key=value ...`` still works, with a deprecation note.
"""

from __future__ import annotations

import argparse
import gc
import sys

from regionspot.cli.arguments import (
    add_legacy_overrides_argument,
    add_overrides_argument,
    add_progress_argument,
    check_output_path,
    merge_legacy_overrides,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="train a RegionSpot head",
        description="Train the fusion head with a YAML config (see configs/). Data-parallel with "
                    "'torchrun --nproc_per_node=N -m regionspot train CONFIG'.",
    )
    parser.add_argument("config", help="training YAML (a TrainConfig)")
    add_legacy_overrides_argument(parser)
    add_overrides_argument(parser, help="training-config overrides with dotted keys, "
                                        "e.g. --set optim.lr=1e-4 datasets.0.ratio=2")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from the latest training state in output_dir/checkpoints")
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from regionspot.config import apply_overrides, load_config
    from regionspot.processes import barrier, init_distributed, shutdown
    from regionspot.train.config import TrainConfig
    from regionspot.train.trainer import Trainer

    merge_legacy_overrides(args)  # already done by regionspot.cli.main.main; kept for direct callers
    config = apply_overrides(load_config(TrainConfig, args.config), args.overrides)
    check_output_path("output_dir", config.output_dir, folder=True)  # before any model is loaded
    ctx = init_distributed(config.device)
    trainer = None
    try:
        trainer = Trainer(config, ctx, resume=args.resume, progress=not args.no_progress)
        trainer.run()
        barrier(ctx)  # rank 0 exports and plots after the last step; leave together
    except KeyboardInterrupt as stop:
        if ctx.is_main:
            print(f"{stop}" if str(stop) else "interrupted", file=sys.stderr)
        return 130
    finally:
        # free the DistributedDataParallel wrapper while its process group still exists: torn down
        # afterwards, its reducer can wait forever on a group that is gone
        del trainer
        gc.collect()
        shutdown(ctx)
    return 0

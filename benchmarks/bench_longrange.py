"""Training throughput of the long-range recipe against today's, side by side on the same data (issue #11).

Recipes (model and data settings; everything else is the training loop of ``ContactLightningModule``):

* ``today``: default.yaml: 128-residue crops, every pair of each crop scored, separation capped at 64, binary head;
* ``window512_whole``: the encoder reads 512-residue windows and the head scores every pair of them (what a longer
  window costs without blocks);
* ``longrange``: longrange.yaml: 512-residue windows, the head trained on 4 sampled 64 x 64 pair blocks per window,
  log-spaced separation, distogram head.

For each recipe, steps of real batches (the data module's own sampler, shuffled with the same seed) run forward + loss
+ backward + AdamW on one torch thread, under bf16 autocast where the CPU has native bf16 (as ``precision: null``
trains). Printed per recipe: CPU seconds per step (``time.process_time``), residues per second (real residues the
encoder read), scored pairs per second (pairs the loss saw), the farthest separation scored, and the share of scored
pairs at separation >= 24 and >= 96. Recipes are interleaved step by step, so a shared CPU slows them alike.

    python benchmarks/bench_longrange.py --data results_full/data        # prepared train.npz / val.npz
    python benchmarks/bench_longrange.py --data results_full/data --steps 10
    # variants of a recipe's network (any ModelConfig key, as model.model.* takes it; YAML values), e.g. the bundled
    # model's head and a wider one:
    python benchmarks/bench_longrange.py --data results_full/data --recipes "" \
        --variant bundled=longrange:hidden_size=128,pair_dim=32,head_blocks=6,distogram_bins=null \
        --variant wide=longrange:hidden_size=128,pair_dim=48,head_blocks=6,distogram_bins=null
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protrnn.errors import InputError  # noqa: E402
from protrnn.model.config import ModelConfig  # noqa: E402
from protrnn.model.hardware import bf16_is_native  # noqa: E402
from protrnn.model.heads import BlockOutputs  # noqa: E402
from protrnn.training.datamodule import ContactDataModule  # noqa: E402
from protrnn.training.loss import scored_pairs  # noqa: E402
from protrnn.training.module import ContactLightningModule  # noqa: E402

CONFIGS = REPO / "protrnn" / "configs"


def _recipe(config: str, **data_overrides: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    spec = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    data = {k: v for k, v in spec["data"].items() if k not in ("train_path", "val_path")}
    data.update(data_overrides)
    module = {k: v for k, v in spec["model"].items() if k != "model"}
    return spec["model"]["model"], module, data


RECIPES = {
    "today": _recipe("default"),
    "window512_whole": _recipe("default", crop_length=512, max_pairs=None),
    "longrange": _recipe("longrange"),
}


#: Keys a ``--variant`` may set: every :class:`~protrnn.model.config.ModelConfig` field (``model.model.*``).
MODEL_KEYS = frozenset(field.name for field in dataclasses.fields(ModelConfig))


def unknown_model_keys(overrides: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """The keys of ``overrides`` that are neither a :class:`ModelConfig` field nor already in the recipe's
    ``model.model`` section (sorted); only these are refused."""
    return sorted(set(overrides) - MODEL_KEYS - set(recipe))


def _batches(data_dir: Path, data: dict[str, Any]) -> Any:
    dm = ContactDataModule(data_dir / "train.npz", data_dir / "val.npz", **data)
    dm.setup("fit")
    while True:
        yield from dm.train_dataloader()


def _separations(batch: dict[str, Any], selected: torch.Tensor, blocks: Any) -> torch.Tensor:
    if blocks is not None:
        return blocks.separations()[selected]
    steps = batch["tokens"].shape[1]
    i = torch.arange(steps)
    return (i[:, None] - i[None, :]).abs().expand(selected.shape)[selected]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="directory with prepared train.npz and val.npz")
    parser.add_argument("--steps", type=int, default=30, help="measured steps per recipe (after 3 warm-up steps)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ",".join(RECIPES))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=RECIPE:KEY=VALUE,...",
                        help="also time RECIPE with these model.model settings (any ModelConfig key; YAML values); "
                             "repeatable")
    args = parser.parse_args()
    recipes = dict(RECIPES)
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        base, _, settings = rest.partition(":")
        if not name or base not in RECIPES:
            parser.error(f"--variant {spec!r}: expected NAME=RECIPE:KEY=VALUE,... with RECIPE one of {', '.join(RECIPES)}")
        model_cfg, module_cfg, data_cfg = RECIPES[base]
        overrides = dict(item.split("=", 1) for item in settings.split(",") if item)
        unknown = unknown_model_keys(overrides, model_cfg)
        if unknown:
            parser.error(f"--variant {name}: unknown model keys {', '.join(unknown)} (ModelConfig keys: "
                         f"{', '.join(sorted(MODEL_KEYS))})")
        merged = {**model_cfg, **{k: yaml.safe_load(v) for k, v in overrides.items()}}
        try:  # a bad value is a one-line error here, not a traceback once the runs are built
            ModelConfig.from_dict(dict(merged))
        except InputError as error:
            parser.error(f"--variant {name}: {error}")
        recipes[name] = (merged, module_cfg, data_cfg)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bf16 = bf16_is_native("cpu")
    print(f"torch {torch.__version__}, 1 thread, bf16 autocast: {bf16}")
    names = [name for name in args.recipes.split(",") if name] + [spec.partition("=")[0] for spec in args.variant]
    runs = {}
    for name in names:
        model_cfg, module_cfg, data_cfg = recipes[name]
        module = ContactLightningModule(model_cfg, **module_cfg)
        optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)
        runs[name] = {"module": module, "opt": optimiser, "batches": _batches(args.data, data_cfg),
                      "cpu": [], "residues": 0, "pairs": 0, "far24": 0, "far96": 0, "max_sep": 0, "data": data_cfg}
    for step in range(args.steps + 3):
        for name in names:
            run = runs[name]
            batch = next(run["batches"])
            start = time.process_time()
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                loss, n_pairs = run["module"]._training_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run["module"].parameters(), 1.0)
            run["opt"].step()
            run["opt"].zero_grad(set_to_none=True)
            elapsed = time.process_time() - start
            if step < 3:
                continue
            run["cpu"].append(elapsed)
            run["residues"] += int(batch["mask"].sum())
            run["pairs"] += int(n_pairs)
            with torch.no_grad():
                blocks = None
                if batch.get("blocks") is not None:  # block positions only, no network
                    blocks = BlockOutputs.positions(batch["blocks"], int(batch["block_size"]))
                    selected = blocks.scored(batch["pair_mask"])
                else:
                    selected = scored_pairs(batch["pair_mask"])
                seps = _separations(batch, selected, blocks)
            run["far24"] += int((seps >= 24).sum())
            run["far96"] += int((seps >= 96).sum())
            run["max_sep"] = max(run["max_sep"], int(seps.max()) if seps.numel() else 0)
    print(f"\n{'recipe':<18} {'s/step':>7} {'residues/s':>11} {'pairs/s':>9} {'max sep':>8} {'>=24':>6} {'>=96':>6}"
          "  data settings")
    for name in names:
        run = runs[name]
        total = sum(run["cpu"])
        pairs = max(1, run["pairs"])
        settings = ", ".join(f"{k}={run['data'].get(k)}" for k in ("crop_length", "pair_block", "blocks_per_chain",
                                                                    "max_tokens", "max_pairs"))
        print(f"{name:<18} {statistics.median(run['cpu']):>7.3f} {run['residues'] / total:>11.0f} "
              f"{run['pairs'] / total:>9.0f} {run['max_sep']:>8d} {run['far24'] / pairs:>6.1%} "
              f"{run['far96'] / pairs:>6.1%}  {settings}")


if __name__ == "__main__":
    main()

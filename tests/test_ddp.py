"""DDP scale-out: `protrnn train` with strategy=ddp, 2 CPU processes (gloo), each rank training on a disjoint shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A callback importable by the DDP worker processes: records the chain IDs of every training batch per rank/epoch.
RECORDER = '''
import json
from pathlib import Path

import pytorch_lightning as pl


class RecordChainIds(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: list[str] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.extend(batch["ids"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        path = self.out_dir / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps({"ids": self.seen, "world_size": trainer.world_size}))
'''


def build_dataset(cgdms_chains, out: Path, count: int) -> list[str]:
    """Save the first ``count`` real cgdms chains (name order) to out/train.npz and the next 4 to out/val.npz."""
    from protrnn.data.dataset import save_dataset

    chains = cgdms_chains(count + 4)
    save_dataset(chains[:count], out / "train.npz")
    save_dataset(chains[count:], out / "val.npz")
    return [c.id for c in chains[:count]]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_two_cpu_processes_train_on_disjoint_shards(cgdms_chains, tmp_path: Path) -> None:
    ids = build_dataset(cgdms_chains, tmp_path, count=12)
    (tmp_path / "shardlog.py").write_text(RECORDER)
    records = tmp_path / "records"
    records.mkdir()
    extra = tmp_path / "callbacks.yaml"
    extra.write_text(textwrap.dedent(f"""\
        trainer:
          callbacks:
            - class_path: shardlog.RecordChainIds
              init_args:
                out_dir: {records}
        """))
    run = tmp_path / "run"
    # max_tokens = crop_length: one chain per batch, 12 batches -> 6 per rank, so no batch is repeated as padding.
    command = [sys.executable, "-m", "protrnn", "train", "--config", "tiny", "--config", str(extra),
               "--data.train_path", str(tmp_path / "train.npz"), "--data.val_path", str(tmp_path / "val.npz"),
               "--data.crop_length", "48", "--data.max_tokens", "48", "--trainer.max_epochs", "2",
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
               "--trainer.default_root_dir", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    for epoch in (0, 1):
        shards = [json.loads((records / f"rank{rank}_epoch{epoch}.json").read_text()) for rank in (0, 1)]
        assert all(s["world_size"] == 2 for s in shards)
        rank0, rank1 = (set(s["ids"]) for s in shards)
        assert len(shards[0]["ids"]) == len(shards[1]["ids"]) == 6  # equal step counts: no DDP hang
        assert not rank0 & rank1, f"epoch {epoch}: ranks overlap on {sorted(rank0 & rank1)}"
        assert rank0 | rank1 == set(ids)
    epoch0 = json.loads((records / "rank0_epoch0.json").read_text())["ids"]
    epoch1 = json.loads((records / "rank0_epoch1.json").read_text())["ids"]
    assert epoch0 != epoch1  # set_epoch reached the sampler: a new shuffle each epoch
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12  # 6 steps per epoch on each rank, in lockstep
    assert (run / "model.json").is_file() and (run / "model.safetensors").is_file()

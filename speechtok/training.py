"""Recipe-side helpers shared by the training recipes (never needed to encode or decode)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from speechtok.codecs.base import Codec
from speechtok.lm.transformer import grow_depth


def export_best(
    codec: Codec,
    save_folder: str | Path,
    directory: str | Path,
    recoverables: dict[str, nn.Module],
    keep: tuple[str, ...],
    min_key: str | None = None,
    **provenance,
) -> Path:
    """Load a recipe's best checkpoint (by dev PESQ-wb, or the lowest `min_key`) into `recoverables`,
    parts of `codec` under their checkpoint names, and save the codec to `directory`. Its `training.json` holds the
    checkpoint's `keep` metrics and `provenance` (e.g. which dev sets the figures come from).
    Reads the checkpoints only, so it is safe while training runs."""
    best_by = {"min_key": min_key} if min_key else {"max_key": "pesq_wb"}
    return export_checkpoint(
        save_folder, recoverables, lambda: codec.eval().save_pretrained(directory), keep, **best_by, **provenance
    )


def export_checkpoint(
    save_folder: str | Path,
    recoverables: dict[str, nn.Module],
    save,
    keep: tuple[str, ...] | None = None,
    *,
    min_key: str | None = None,
    max_key: str | None = None,
    **provenance,
) -> Path:
    """Load the best checkpoint (lowest `min_key` or highest `max_key`) into `recoverables`, write
    the model with `save()` (it returns the folder) and, beside it, `training.json`: the
    checkpoint's metrics (`keep`, or all) and `provenance`. Reads the checkpoints only, so it is
    safe while training runs."""
    from speechbrain.utils.checkpoints import Checkpointer

    best = Checkpointer(save_folder, recoverables).recover_if_possible(min_key=min_key, max_key=max_key)
    if best is None:
        raise SystemExit(f"no checkpoint in {save_folder} to export")
    out = save()
    record = {k: v for k, v in best.meta.items() if (k in keep if keep else not k.startswith("unixtime"))}
    (out / "training.json").write_text(json.dumps(record | provenance, indent=2) + "\n")
    return out


def copy_matching(target: nn.Module, source: nn.Module) -> list[str]:
    """Copy every tensor of `source` whose name and shape `target` shares; the names of target's
    tensors left as initialised (e.g. a head of another size), for the log."""
    own, theirs = target.state_dict(), source.state_dict()
    same = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    target.load_state_dict({**own, **same})
    return sorted(set(own) - set(same))


def grown_like(target: nn.Module, source: nn.Module, prefix: str, outputs: tuple[str, ...]) -> nn.Module:
    """`source` with as many blocks under `prefix` as `target` has, the added ones the identity
    (`grow_depth`: their residual `outputs` zeroed), so a deeper warm start begins where its source
    was; `source` itself where it is as deep already."""

    def depth(module: nn.Module) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in module.state_dict() if k.startswith(prefix)})

    n_old, n_new = depth(source), depth(target)
    if n_new <= n_old:
        return source
    grown = copy.deepcopy(target)
    grown.load_state_dict(grow_depth(source.state_dict(), n_old, n_new, prefix, outputs))
    print(f"init_from: grown from {n_old} to {n_new} blocks ({prefix}*)", flush=True)
    return grown


def copy_own(target, source) -> None:
    """Copy a codec's own weights (`Codec.own_state_dict`) from `source`, which must have them all;
    the ones `target` borrows (a vocoder named by `vocoder_from`) stay as loaded."""
    theirs = {k: v for k, v in source.state_dict().items() if not k.startswith(target.borrowed_weights)}
    missing = sorted(set(target.own_state_dict()) - set(theirs))
    if missing:
        raise RuntimeError(f"{len(missing)} weights missing, first {missing[0]!r}")
    target.load_state_dict({**target.state_dict(), **theirs})


def warm_start(hparams: dict, copy_from) -> None:
    """A fresh run (no checkpoint in `save_folder` yet) starts from the codec folder `init_from`:
    `copy_from(source_codec)` loads what the run trains from it. Resumed runs ignore `init_from`."""
    from speechtok.codecs import load_codec

    folder = hparams.get("init_from")
    if not folder or any(Path(hparams["save_folder"]).glob("CKPT*")):
        return
    try:
        copy_from(load_codec(folder))
    except RuntimeError as exc:  # load_state_dict's size or key mismatch
        raise ValueError(f"init_from {folder}: weights do not fit this model ({str(exc).splitlines()[0]})") from exc
    print(f"warm start from {folder}", flush=True)


def warm_start_matching(hparams: dict, target: nn.Module, part) -> None:
    """`warm_start` into another architecture (a causal vocoder's smaller iSTFT head, a flow decoder's
    noisy-input layers): `target` takes every tensor of `part(source_codec)` that fits, and the log
    names what starts fresh."""

    def copy(source) -> None:
        new = copy_matching(target, part(source))
        if new:
            print(f"new in this run (not in init_from): {', '.join(new)}", flush=True)

    warm_start(hparams, copy)


def fit_codec_brain(brain, hparams: dict, train_set, dev_set) -> None:
    """The codec recipes' `fit`: epochs of random crops in batches of `batch_size`, whole dev
    utterances one at a time (they differ in length)."""
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        dev_set,
        train_loader_kwargs={
            "batch_size": hparams["batch_size"],
            "num_workers": hparams["num_workers"],
            "drop_last": True,
        },
        valid_loader_kwargs={"batch_size": 1},
    )


def start_recipe(argv: list[str], export) -> tuple[dict, dict] | None:
    """A recipe's command line: its HyperPyYAML loaded with the overrides. With `--export_only True`
    `export(hparams)` runs (it returns the folder written) and this returns None; otherwise the
    experiment folder is created and (hparams, run_opts) returned for training."""
    import speechbrain as sb
    from hyperpyyaml import load_hyperpyyaml

    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as f:
        hparams = load_hyperpyyaml(f, overrides)
    if hparams["export_only"]:
        print(f"exported {export(hparams)}")
        return None
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    return hparams, run_opts

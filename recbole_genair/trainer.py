"""The trainer for every model run through recbole_genair: RecBole's `Trainer` plus these hooks.

- Loss hook: auxiliary losses computed by the trainer and added to the model's ranking loss; GenAIR's
  behavioural calibration (eqs. 9-14) is one, weighted by `alpha` and logged on its own line.
- Epoch hook: models with `set_epoch(epoch)` are told the epoch before it starts (curricula).
- Train-mode hook: with `train_mode: all_positions`, SASRec / GRU4Rec backbones take their ranking loss at
  every position of the all-position batches (`recbole_genair.model.all_positions`), plus the model's
  `auxiliary_losses`; BERT4Rec backbones keep their own loss on the whole windows.
- Padding hook: batches of SASRec, GRU4Rec, BERT4Rec and the models on them (their outputs at real positions
  never depend on trailing padding) are cut to their longest history in training and evaluation
  (`recbole_genair.data.padding`; exact, and most of the work at the paper's max length 200).
- Sampled-evaluation hook: RecBole scores each (user, sampled candidate) row of `uni100` with `predict`, one
  sequence pass per row (101 per user); a sequential model's scores are read from one `full_sort_predict` per
  user instead (`sampled_eval_from_full_ranking`), the same scores at a hundredth of the work.
- Checkpoints get names no other run can share, and RecBole's can be read back on torch >= 2.6. They
  also hold the raw item ids in row order and the package version, so that a checkpoint never loads
  onto another dataset's items (`recbole_genair.quick_start.load_data_and_model`).
- Evaluation hook: each user's target item and the training popularity are collected for the
  head/tail/cold group metrics of `recbole_genair.evaluation.group_metrics`.
- Distributed hook (RecBole's torch.distributed path): CPU ranks get a CPU `DistributedDataParallel`, and
  evaluation gathers every rank's rows before the metrics (`recbole_genair.distributed`).
With no hook active it trains exactly like RecBole's `Trainer`.
"""
import os
import socket
import uuid
from time import time

import numpy as np
import torch
from recbole.model.abstract_recommender import AbstractRecommender, SequentialRecommender
from recbole.trainer import Trainer
from recbole.utils import EvaluatorType, get_local_time, set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_genair import __version__
from recbole_genair.checkpoint import checkpoint_state, training_inputs, write_checkpoint
from recbole_genair.data.cooccurrence import cooccurrence_matrix
from recbole_genair.data.padding import trim_trailing_padding
from recbole_genair.data.popularity import item_popularity
from recbole_genair.data.train_modes import NEXT_ITEM
from recbole_genair.distributed import broadcast_value, gather_eval_struct
from recbole_genair.evaluation.group_metrics import TARGET_ITEMS, TRAIN_POPULARITY, collect_target_items
from recbole_genair.model.all_positions import TrainModeError, all_position_losses, train_objective
from recbole_genair.model.layers import LLMItemEmbedding
from recbole_genair.model.losses import BehaviouralCalibrationLoss
from recbole_genair.runtime import trusted_checkpoint_load


def unique_checkpoint_name(config):
    """`<model>-seed<seed>-<time>-<host>-<pid>-<random>.pth`: unique across processes and hosts.

    RecBole names checkpoints `<model>-<time to the second>.pth`, so two runs started in the same second
    with one `checkpoint_dir` write one file and test each other's weights.
    """
    host = "".join(c for c in socket.gethostname().split(".")[0] if c.isalnum() or c == "-")[:24] or "host"
    return f"{config['model']}-seed{config['seed']}-{get_local_time()}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.pth"


def padding_spare(model_class):
    """Padding columns a batch of `model_class` must keep after its longest history, None: never cut. The
    all-position models (SASRec, GRU4Rec, BERT4Rec and the models on them that run the backbone's own forward)
    give the same outputs at real positions whatever padding follows; BERT4Rec's prediction needs one column."""
    try:
        objective = train_objective(model_class, "all_positions")
    except TrainModeError:
        return None
    return 0 if objective == NEXT_ITEM else 1


class CheckpointLoadMixin:
    """Unique checkpoint names; RecBole checkpoints (they pickle the config) read back on torch >= 2.6."""

    def __init__(self, config, model):
        super().__init__(config, model)
        name = unique_checkpoint_name(config)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            name = broadcast_value(name)  # rank 0 writes it, every rank reads the best weights from it
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)

    def resume_checkpoint(self, resume_file):
        with trusted_checkpoint_load():
            return super().resume_checkpoint(resume_file)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        with trusted_checkpoint_load():  # RecBole's other trainers write their own (pickled) checkpoints
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)


class LLMRecTrainer(CheckpointLoadMixin, Trainer):
    """RecBole `Trainer` with the loss and epoch hooks of recbole_genair."""

    def __init__(self, config, model):
        if not config["single_spec"] and config["device"].type == "cpu":
            # RecBole wraps the model for one GPU per rank (device_ids=[local_rank]); a CPU model takes none
            config["single_spec"] = True
            try:
                super().__init__(config, model)
            finally:
                config["single_spec"] = False
            # frozen LLM tables are the same on every rank: no buffer broadcast at each step
            self.distributed_model = DistributedDataParallel(self.model, broadcast_buffers=False)
        else:
            super().__init__(config, model)
        # GenAIR's calibration settings (props/model/GenAIR.yaml): a model without them has no calibration, and one
        # given to it anyway (e.g. --alpha=0.1 for TF-LLMER) is refused by `_build_calibration`
        self.alpha = float(config["alpha"]) if config["alpha"] is not None else 0.0
        self.alpha_normalization = config["alpha_normalization"]  # GenAIR's; None for a model without calibration
        if self.alpha_normalization not in (None, "none", "ranking_terms"):
            raise ValueError(f"alpha_normalization must be 'none' or 'ranking_terms', not {self.alpha_normalization!r}")
        self.calibration = None
        self.excluded_items = None  # unseen_item_negatives: False (collect_training_statistics)
        self.every_position = train_objective(type(model), config["train_mode"]) == NEXT_ITEM
        self.padding_spare = padding_spare(type(model)) if config["trim_padding"] is not False else None
        self.sampled_from_full_ranking = (isinstance(model, SequentialRecommender)  # DIN, DIEN: no full ranking
                                          and type(model).full_sort_predict is not AbstractRecommender.full_sort_predict
                                          and config["sampled_eval_from_full_ranking"] is not False
                                          and config["eval_type"] == EvaluatorType.RANKING)
        self.epoch_seconds, self.valid_scores = [], []
        self.calibration_gradient_ratios, self._measure_gradients = [], False
        if not config["single_spec"]:
            self._collector_struct = self.eval_collector.get_data_struct
            self.eval_collector.get_data_struct = self._gathered_struct

    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer, over the model's own parameter groups when it has them (e.g. a weight decay of its own)."""
        if "params" not in kwargs and hasattr(self.model, "optimizer_parameter_groups"):
            groups = self.model.optimizer_parameter_groups()
            if groups is not None:
                kwargs["params"] = groups
        return super()._build_optimizer(**kwargs)

    def training_summary(self):
        """How training ended: epochs run, the epoch whose weights were kept, whether early stopping ended it."""
        scores = self.valid_scores
        best = (max(scores) if self.valid_metric_bigger else min(scores)) if scores else None
        return {
            "train_mode": self.config["train_mode"],
            "train_batch_size": self.config["train_batch_size"],
            "epochs": len(self.epoch_seconds),
            # RecBole keeps the last validation that reaches the best score (its early stopping compares with >=)
            "best_epoch": (max(i for i, v in enumerate(scores) if v == best) + 1) * self.eval_step - 1 if scores else None,
            "stopped_early": len(self.epoch_seconds) < self.epochs,
            "seconds_per_epoch": sorted(self.epoch_seconds)[len(self.epoch_seconds) // 2] if self.epoch_seconds else None,
            "train_seconds": sum(self.epoch_seconds),
            # per epoch, first step: ||grad alpha L_cal|| / ||grad L_rank|| on the projector (GenAIR with alpha > 0)
            "calibration_gradient_ratio": list(self.calibration_gradient_ratios) or None,
        }

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.collect_training_statistics(train_data)
        dataset = train_data._dataset
        self.item_ids = [str(token) for token in dataset.field2id_token[dataset.iid_field]]
        # what rebuilding the model from its checkpoint alone needs (recbole_genair.checkpoint.SavedDataset)
        self.training_inputs = training_inputs(dataset)
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole 1.2.1's checkpoint in recbole_genair's format (`recbole_genair.checkpoint`): plain types only."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = checkpoint_state(
            self.config, self.model, getattr(self, "item_ids", None), training=getattr(self, "training_inputs", None),
            epoch=epoch, cur_step=self.cur_step, best_valid_score=self.best_valid_score,
            optimizer=self.optimizer.state_dict(), recbole_genair_version=__version__,
        )
        write_checkpoint(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def collect_training_statistics(self, train_data):
        """Everything computed from the training split: calibration counts, item popularity for group metrics.

        `fit` calls it; call it yourself before `evaluate` on a model loaded from a checkpoint.
        """
        self.calibration = self._build_calibration(train_data)
        if self.eval_collector.register.need(TRAIN_POPULARITY):
            self.eval_collector.data_struct.set(TRAIN_POPULARITY, torch.from_numpy(item_popularity(train_data._dataset)))
        self.excluded_items = self._unseen_items_left_out(train_data)

    def _unseen_items_left_out(self, train_data):
        """`unseen_item_negatives: False`: the items without a training interaction, which leave the training softmax.

        An item added after training is absent from the softmax that trained the model; one that is only held out
        (`cold_items`, or an item first clicked in validation or test) would otherwise be pushed down as a negative
        at every step. None when the setting is on (the default: RecBole's loss over every item).
        """
        if self.config["unseen_item_negatives"] is not False:
            return None
        if not self.every_position or self.model.loss_type != "CE":
            raise ValueError(f"unseen_item_negatives: False needs train_mode: all_positions with loss_type: CE (the "
                             f"softmax it leaves items out of); {type(self.model).__name__} trains with "
                             f"train_mode {self.config['train_mode']} and loss_type {self.model.loss_type}: set "
                             f"unseen_item_negatives: True or train on all positions")
        unseen = np.flatnonzero(item_popularity(train_data._dataset)[1:] == 0) + 1
        self.logger.info(f"unseen_item_negatives: False: {len(unseen)} items without a training interaction are left "
                         f"out of the training softmax")
        return torch.as_tensor(unseen, dtype=torch.long, device=self.device) if len(unseen) else None

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        struct = self.eval_collector.data_struct
        if self.eval_collector.register.need(TRAIN_POPULARITY) and TRAIN_POPULARITY not in struct:
            raise RuntimeError("group metrics need the training split's item popularity: call "
                               "trainer.collect_training_statistics(train_data) before evaluate()")
        self._eval_sample_size = getattr(eval_data, "sample_size", None)
        if load_best_model and not self.config["single_spec"]:
            torch.distributed.barrier()  # rank 0 may still be writing the checkpoint every rank is about to read
        try:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            if TARGET_ITEMS in struct:  # RecBole clears its own per-evaluation keys, not ours
                del struct[TARGET_ITEMS]

    def _map_reduce(self, result, num_sample):
        """Distributed: the metrics were computed on every rank's rows already (`_gathered_struct`)."""
        return result

    def _gathered_struct(self):
        """The evaluation rows of every rank (distributed), else this process's."""
        struct = self._collector_struct()
        if not self.config["single_spec"]:
            gather_eval_struct(struct, self._eval_sample_size)
        return struct

    @property
    def trims_padding(self):
        return self.padding_spare is not None

    def _trimmed(self, interaction):
        """`interaction` cut to its longest history (`trim_padding`), or as it is."""
        if not self.trims_padding:
            return interaction
        return trim_trailing_padding(interaction, self.model.ITEM_SEQ, self.padding_spare)

    def _trimmed_batch(self, batched_data):
        return (self._trimmed(batched_data[0]), *batched_data[1:])

    def _full_sort_batch_eval(self, batched_data):
        batched_data = self._trimmed_batch(batched_data)
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        collect_target_items(self.eval_collector, scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i

    def _neg_sample_batch_eval(self, batched_data):
        batched_data = self._trimmed_batch(batched_data)
        if self.sampled_from_full_ranking:
            interaction, scores, positive_u, positive_i = self._sampled_scores_from_full_ranking(batched_data)
        else:
            interaction, scores, positive_u, positive_i = super()._neg_sample_batch_eval(batched_data)
        collect_target_items(self.eval_collector, scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i

    def _sampled_scores_from_full_ranking(self, batched_data):
        """RecBole's sampled-evaluation scores (-inf off the candidates), from one full ranking per user."""
        interaction, row_idx, positive_u, positive_i = batched_data
        n_users = int(positive_u[-1]) + 1
        rows = torch.as_tensor(row_idx, dtype=torch.long)
        first = torch.full((n_users,), len(rows), dtype=torch.long).scatter_reduce_(
            0, rows, torch.arange(len(rows)), reduce="amin")  # every row of a user holds the same history
        full = self.model.full_sort_predict(interaction[first].to(self.device)).view(n_users, -1)
        rows, items = rows.to(full.device), interaction[self.config["ITEM_ID_FIELD"]].to(full.device)
        scores = torch.full((n_users, self.tot_item_num), -float("inf"), device=full.device)
        scores[rows, items] = full[rows, items]
        return interaction, scores, positive_u, positive_i

    def _build_calibration(self, train_data):
        """Calibration loss from the co-occurrence counts of the training split only."""
        embedding = getattr(self.model, "item_embedding", None)
        if self.alpha <= 0 or not isinstance(embedding, LLMItemEmbedding):
            return None
        if not getattr(self.model, "supports_calibration", False):
            raise ValueError(f"alpha={self.alpha}: behavioural calibration is GenAIR's loss, and {type(self.model).__name__} "
                             f"has none; remove alpha or use a GenAIR model.")
        counts = cooccurrence_matrix(train_data._dataset, window=self.config["cooccurrence_window"])
        self.logger.info(
            f"behavioural calibration: alpha={self.alpha} ({self.alpha_normalization}), gamma={self.config['gamma']}, t={self.config['t']}, "
            f"kernel={self.config['calibration_kernel']}, {counts.nnz} co-occurring item pairs (training split)"
        )
        return BehaviouralCalibrationLoss(
            counts,
            gamma=self.config["gamma"],
            t=self.config["t"],
            kernel=self.config["calibration_kernel"],
        )

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if hasattr(self.model, "set_epoch"):
            self.model.set_epoch(epoch_idx)
        if loss_func is None:
            loss_func = self._loss_with_calibration if self.calibration is not None else self._model_losses
        if self.trims_padding:
            losses_of = loss_func

            def loss_func(interaction):
                return losses_of(self._trimmed(interaction))
        start = time()
        # measured with autograd.grad, outside the gradient all-reduce of a distributed run: one process only
        self._measure_gradients = self.calibration is not None and self.config["single_spec"]
        losses = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time() - start)
        return losses

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.valid_scores.append(score)
        return score, result

    def _model_losses(self, interaction):
        """The model's losses: `calculate_loss`, or with all_positions its ranking loss at every position."""
        if self.every_position:
            return all_position_losses(self.model, interaction, self.excluded_items)
        return self.model.calculate_loss(interaction)

    def _loss_with_calibration(self, interaction):
        """L = L_rank + alpha * L_cal, with one projection of the item table per step.

        `alpha_normalization: ranking_terms` multiplies alpha by the batch's number of ranking terms (its targets),
        which is the paper's weighting (eq. 17 sums over users and positions, eq. 14 is a mean) with our mean loss.

        On the first step of each epoch the gradients of the two terms on the projector are measured apart:
        `calibration_gradient_ratios` (logged with the epoch's losses) is ||grad alpha L_cal|| / ||grad L_rank||.
        """
        with self.model.item_embedding.shared_table() as table:
            losses = self._model_losses(interaction)
            items = self.model.calibration_items(interaction)
            cal = self.calibration(table, items)
        weight = self.alpha
        if self.alpha_normalization == "ranking_terms":
            # eq. 17 sums the ranking loss over its (user, position) terms, ours averages: alpha per summed term
            weight = self.alpha * int((items > 0).sum())
        losses = losses if isinstance(losses, tuple) else (losses,)
        if self._measure_gradients and torch.is_grad_enabled():
            self._measure_gradients = False
            self.calibration_gradient_ratios.append(self._gradient_ratio(sum(losses), weight * cal))
        return (*losses, weight * cal)

    def _gradient_ratio(self, ranking, calibration):
        """||d calibration / d projector|| / ||d ranking / d projector|| (the graph is kept for the step's backward)."""
        params = [p for p in self.model.item_embedding.projector.parameters() if p.requires_grad]
        norms = []
        for loss in (ranking, calibration):
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item())
        return norms[1] / norms[0] if norms[0] > 0 else float("inf")

    def _loss_names(self, n_losses):
        names = list(getattr(self.model, "loss_names", ("rec",)))
        if self.calibration is not None:
            names.append("cal")
        if len(names) != n_losses:
            names = [f"loss{i + 1}" for i in range(n_losses)]
        return names

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        if not isinstance(losses, tuple):
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        places = self.config["loss_decimal_place"]
        parts = [f"{set_color('train_loss', 'blue')}: {sum(losses):.{places}f}"]
        parts += [
            f"{set_color(name + '_loss', 'blue')}: {value:.{places}f}"
            for name, value in zip(self._loss_names(len(losses)), losses)
        ]
        if self.calibration is not None and self.calibration_gradient_ratios:
            parts.append(f"{set_color('cal/rank grad', 'blue')}: {self.calibration_gradient_ratios[-1]:.3g}")
        head = set_color("epoch %d training", "green") % epoch_idx
        return f"{head} [{set_color('time', 'blue')}: {e_time - s_time:.2f}s, " + ", ".join(parts) + "]"

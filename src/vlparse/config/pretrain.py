"""The pre-training config: model, objectives, data, optimizer and loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlparse.config.base import Config, FieldError, chosen_by
from vlparse.config.families import model_config_type, objectives_type
from vlparse.config.model import ModelConfig
from vlparse.config.objectives import ObjectiveConfig
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig

__all__ = ["PretrainConfig"]


@dataclass
class PretrainConfig(Config):
    """A pre-training run. ``model`` is the config class of its ``family`` (default
    ``visual_parsing``: :class:`ModelConfig`) and ``objectives`` that family's objectives
    (:class:`ObjectiveConfig` for Visual Parsing); see :mod:`vlparse.config.families`."""

    model: ModelConfig = chosen_by(model_config_type)
    objectives: ObjectiveConfig = chosen_by(objectives_type)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        o, tr = self.objectives, self.train
        if not isinstance(o, ObjectiveConfig):
            return  # another family checks its own objectives
        if o.itm_negatives == "batch" and (tr.batch_size // tr.grad_accum) % o.itm_negative_group:
            raise FieldError(
                "objectives.itm_negatives",
                f"'batch' needs train.batch_size / train.grad_accum ({tr.batch_size} / "
                f"{tr.grad_accum}) to be a multiple of objectives.itm_negative_group "
                f"({o.itm_negative_group})",
                also=["train.batch_size", "train.grad_accum", "objectives.itm_negative_group"],
            )
        if o.lambda_itc > 0 and self.model.itc_dim == 0:
            raise FieldError(
                "objectives.lambda_itc",
                f"{o.lambda_itc} > 0 needs model.itc_dim > 0 (the contrastive projections)",
                also=["model.itc_dim"],
            )

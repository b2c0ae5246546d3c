"""Training: the paper's two stages as LightningModules, plus EMA, strategies, export and synthetic data.

* :class:`StageOneClipAligner` (clip-level audio attention) and :class:`StageTwoLipRefiner`
  (frame-level windows + the lip-tracing mask loss) over :class:`FantasyTalkingModule`;
* configuration dataclasses (:class:`BackboneConfig`, :class:`FaceConfig`, ...), one per concern;
* :class:`EMACallback`; :class:`TimeBudget` (steps chosen to fill a wall-clock budget); :class:`WanFSDPStrategy` (FSDP over Wan blocks; DDP is Lightning's ``ddp``);
* :func:`export_checkpoint` / :func:`export_conditioning` and :func:`load_into_pipeline`;
* :class:`SyntheticTalkingDataModule` for smoke runs without data.

Commands: see ``examples/finetune.py``.
"""

from fantasytalking.training.budget import TimeBudget
from fantasytalking.training.builder import attach_face, attach_motion, build_pipeline, tiny_pipeline
from fantasytalking.training.config import (
    AudioConfig,
    BackboneConfig,
    FaceConfig,
    MotionConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainableConfig,
)
from fantasytalking.training.ema import EMACallback
from fantasytalking.training.export import (
    conditioning_tensors,
    export_checkpoint,
    export_conditioning,
    load_into_pipeline,
    read_export,
    read_export_config,
    with_motion_request_scale,
)
from fantasytalking.training.module import (
    FantasyTalkingModule,
    StageOneClipAligner,
    StageTwoLipRefiner,
    TrainingInputs,
    TrainingLoss,
)
from fantasytalking.training.objective import (
    degrade_reference,
    flow_matching_pair,
    latent_lip_mask,
    masked_mean,
    sample_sigmas,
    shift_sigmas,
    step_generator,
)
from fantasytalking.training.presets import demo_pipeline
from fantasytalking.training.strategies import WanFSDPStrategy
from fantasytalking.training.synthetic import SyntheticTalkingDataModule, SyntheticTalkingDataset

__all__ = [
    "AudioConfig",
    "BackboneConfig",
    "EMACallback",
    "FaceConfig",
    "FantasyTalkingModule",
    "MotionConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "StageOneClipAligner",
    "StageTwoLipRefiner",
    "SyntheticTalkingDataModule",
    "SyntheticTalkingDataset",
    "TimeBudget",
    "TrainableConfig",
    "TrainingInputs",
    "TrainingLoss",
    "WanFSDPStrategy",
    "WanVAETrainer",
    "attach_face",
    "attach_motion",
    "build_pipeline",
    "conditioning_tensors",
    "degrade_reference",
    "demo_pipeline",
    "export_checkpoint",
    "export_conditioning",
    "flow_matching_pair",
    "latent_lip_mask",
    "load_into_pipeline",
    "masked_mean",
    "read_export",
    "read_export_config",
    "sample_sigmas",
    "shift_sigmas",
    "step_generator",
    "tiny_pipeline",
    "with_motion_request_scale",
]


def __getattr__(name: str):  # PEP 562: the VAE trainer is imported on first use, not with the package
    # (`python -m fantasytalking.training.vae` runs that module as __main__; imported here first, runpy warns that
    # it was already in sys.modules and the command would run a second copy of it)
    if name == "WanVAETrainer":
        from fantasytalking.training.vae import WanVAETrainer

        return WanVAETrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

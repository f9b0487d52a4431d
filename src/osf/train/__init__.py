"""Training a supernet: samplers, distillation, the loop, checkpoints, evaluation."""
from .checkpoint import CheckpointError, load_weights
from .distill import Distill, select_output
from .ema import EMA
from .evaluate import Validation, accuracy, evaluate
from .forkjoin import ConfigMismatch, ForkJoin, init_process_group
from .loop import TrainingInterrupted, TrainResult, train
from .samplers import (ArchSampler, MotifSampler, ProgressiveShrinking, Sampler, SandwichSampler, UniformSampler,
                       WarmupSampler)

__all__ = ["ArchSampler", "CheckpointError", "ConfigMismatch", "EMA", "ForkJoin", "init_process_group", "load_weights", "Distill", "MotifSampler", "ProgressiveShrinking", "Sampler", "SandwichSampler",
           "TrainingInterrupted", "TrainResult", "UniformSampler", "Validation", "WarmupSampler", "accuracy", "evaluate", "select_output", "train"]

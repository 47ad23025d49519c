"""Evaluate classifiers on LAIONet, ImageNet and ImageNet-V2 (spec §7): per-class recall with Wilson
standard errors, equally and frequency-weighted accuracy, and the LAIONet-vs-ImageNet plot."""

from laionet.evaluate.run import Evaluation, evaluate, run_evaluate

__all__ = ["Evaluation", "evaluate", "run_evaluate"]

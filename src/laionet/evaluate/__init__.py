"""Evaluate classifiers on LAIONet, ImageNet and ImageNet-V2 (spec §7): per-class recall with Wilson
standard errors, equally and frequency-weighted accuracy, and the LAIONet-vs-ImageNet plot."""

__all__ = ["Evaluation", "evaluate", "run_evaluate"]


def __getattr__(name: str):
    # imported on first use: `laionet` registers this package's command at start-up, and the evaluation
    # code pulls in Polars, which every other command would pay for
    if name in __all__:
        from laionet.evaluate import run

        return getattr(run, name)
    raise AttributeError(name)

"""Evaluation of frozen representations: weighted kNN and labelled subsets."""
from simclr_jax.evaluate.knn import (KnnEvaluator, extract_features, knn_accuracy,
                                     knn_classify)
from simclr_jax.evaluate.subsets import class_balanced_subset

__all__ = [
    "KnnEvaluator",
    "class_balanced_subset",
    "extract_features",
    "knn_accuracy",
    "knn_classify",
]

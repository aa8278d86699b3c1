"""Evaluation of frozen representations: weighted kNN and labelled subsets."""
from simclr_jax.evaluate.knn import extract_features, knn_accuracy, knn_classify, knn_eval
from simclr_jax.evaluate.subsets import class_balanced_subset

__all__ = [
    "class_balanced_subset",
    "extract_features",
    "knn_accuracy",
    "knn_classify",
    "knn_eval",
]

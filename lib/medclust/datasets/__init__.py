"""Public medical-image datasets as medclust cohorts (``python -m medclust.datasets``).

``medmnist_cohort`` turns an official MedMNIST v2 / MedMNIST+ npz into a cohort folder.
"""

from medclust.datasets.medmnist import MedMNISTError, medmnist_cohort

__all__ = ["MedMNISTError", "medmnist_cohort"]

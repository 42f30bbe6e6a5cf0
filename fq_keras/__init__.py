"""Feature quantization for Keras 3: the FQ-GAN dictionary layer and its training helpers."""

from fq_keras.feature_quantization import FeatureQuantization
from fq_keras.gan import fq_loss, update_dictionaries

__all__ = ["FeatureQuantization", "fq_loss", "update_dictionaries"]

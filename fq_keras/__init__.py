"""Feature quantization for Keras 3: the FQ-GAN dictionary layer and its training helpers."""

from fq_keras.feature_quantization import FeatureQuantization
from fq_keras.gan import (UPDATE_CADENCES, check_update_cadence, fq_loss, set_quantized_forward,
                          update_after_phase, update_dictionaries, warmup_alpha)

__all__ = ["FeatureQuantization", "fq_loss", "update_dictionaries", "update_after_phase",
           "UPDATE_CADENCES", "check_update_cadence", "set_quantized_forward", "warmup_alpha"]

# SQ-GAN: style quantization of the generator's w and its codebook initialisation (CBI).
from fq_keras.style_quantization import (  # noqa: E402
    StyleQuantization, perturb_latents, sq_consistency_loss, sq_generator_loss, uniformity_loss)
from fq_keras.codebook_init import (  # noqa: E402
    initialize_codebook, load_image_features, make_code_mapper, sinkhorn)

__all__ += ["StyleQuantization", "perturb_latents", "sq_consistency_loss", "sq_generator_loss",
            "uniformity_loss", "initialize_codebook", "load_image_features", "make_code_mapper",
            "sinkhorn"]

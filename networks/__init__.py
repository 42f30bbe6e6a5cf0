"""Networks of the FQ-GAN port (NHWC): ProGAN, StyleGAN, StyleGAN2 (`progan`, `stylegan`,
`stylegan2`, built from `layers`), U-GAT-IT and BigGAN, and `convert` (official-weight import).

Import the module you need, e.g. `from networks import stylegan2`; nothing is imported here so
that importing one family never builds TensorFlow state for another.
"""

"""3D latent inpainting of brain MRI (BraTS "local synthesis of healthy brain tissue").

cases (inputs per subject and mask) -> model_input (t1n autoencoder latents, conditioning) ->
diffusion_training (the core's inpaint mode through the one training job) -> inference (K samples,
mean and SD, composited) -> evaluate (baselines, scorer) -> reports / outputs. docs/inpainting.md.
"""

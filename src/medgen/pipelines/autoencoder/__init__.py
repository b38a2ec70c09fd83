"""The `autoencoder` pipeline: 2D VAE-GAN, 3D patch-volume autoencoder, latents, 3D DiT."""

from medgen.pipelines.autoencoder.pipeline import create_pipeline

__all__ = ["create_pipeline"]

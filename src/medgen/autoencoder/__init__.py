"""Autoencoders for latent diffusion: 2D VAE-GAN, 3D patch-volume autoencoder, latent datasets.

Every autoencoder implements `medgen.autoencoder.protocol.LatentAutoencoder`; the GAN
training module, the latent encoding node and `medgen.diffusion.LatentSpace` rely on nothing
else.
"""

"""Feature-extraction throughput and FID cost for medgen.metrics (run by hand, prints JSON).

Measures, on 64x64 single-channel slices in [-1, 1]:
- images/s of the in-domain backbone (untrained weights: speed does not depend on them),
  through the full clean-fid path (8-bit quantisation, .npy dataset, batching) and as
  a bare network forward;
- images/s of a *randomly initialised* torchvision Inception-v3 (architecture cost
  only; no Inception weights exist offline, so this is not an FID backbone) fed
  through clean-fid's "clean" resize to 299x299, i.e. what inception_v3 FID would cost;
- wall time of a whole FID (features of real + generated + Fréchet distance) with the
  in-domain backbone for 1k and 4k images per side;
- wall time of the Fréchet distance alone for 2048-d (Inception-sized) features.

Usage: uv run python benchmarks/feature_extraction.py [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)
from torchvision.models import inception_v3

from medgen.metrics import (
    FeatureBackbone,
    InDomainEncoder,
    compute_fid,
    custom_backbone,
    extract_features,
    frechet_distance,
    in_domain_backbone,
)


def random_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def random_init_inception_backbone() -> FeatureBackbone:
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = torch.nn.Identity()
    # fn_resize=None: clean-fid's own "clean" resize to 299x299, what inception_v3 FID pays.
    return custom_backbone(
        "torchvision inception_v3, random init (architecture cost only; not FID)",
        net,
        fn_resize=None,
        mode="clean",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_feat, n_incep, fid_sizes = (256, 16, (250, 500)) if args.quick else (1024, 64, (1000, 4000))

    report: dict = {
        "machine": machine_info(),
    }
    encoder = InDomainEncoder()  # default: feature_dim 128, width 32, input 64
    in_domain = in_domain_backbone(encoder, provenance="untrained; speed only")
    images = random_images(n_feat)
    extract_features(images[:64], in_domain)  # warm-up
    _, t = timed(lambda: extract_features(images, in_domain, batch_size=128))
    with torch.no_grad():
        _, t_bare = timed(lambda: [encoder(images[s : s + 128]) for s in range(0, n_feat, 128)])
    report["in_domain"] = {
        "images": n_feat,
        "images_per_s_cleanfid_path": n_feat / t,
        "images_per_s_network_only": n_feat / t_bare,
        "feature_dim": encoder.feature_dim,
    }

    inception = random_init_inception_backbone()
    small = random_images(n_incep, seed=1)
    extract_features(small[:4], inception, batch_size=4)  # warm-up
    _, t = timed(lambda: extract_features(small, inception, batch_size=16))
    report["inception_v3_random_init"] = {
        "images": n_incep,
        "images_per_s_cleanfid_clean_path": n_incep / t,
        "resize": "clean-fid 'clean' (PIL bicubic to 299x299)",
        "feature_dim": 2048,
    }

    report["fid_in_domain"] = {}
    for n in fid_sizes:
        real, gen = random_images(n, seed=2), random_images(n, seed=3)
        result, t = timed(
            lambda real=real, gen=gen: compute_fid(real, gen, in_domain, batch_size=128)
        )
        report["fid_in_domain"][f"{n}_vs_{n}"] = {"seconds": t, "fid": result.value}
        # What the same FID would cost with Inception, from the measured throughput.
        report["fid_in_domain"][f"{n}_vs_{n}"]["inception_estimate_seconds"] = (
            2 * n / report["inception_v3_random_init"]["images_per_s_cleanfid_clean_path"]
        )

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4096, 2048)), rng.normal(size=(4096, 2048)) + 0.01
    _, t = timed(lambda: frechet_distance(a, b))
    report["frechet_distance_2048d_seconds"] = t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

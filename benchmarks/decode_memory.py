"""Peak memory of full vs tiled decoding with the patch-volume autoencoder, at several volume sizes.

Each case (volume size x method x device) runs in a fresh Python subprocess, so one case's
allocations cannot hide in another's high-water mark. On the CPU the peak resident set size
(``VmHWM`` of ``/proc/self/status``) is reset just before decoding (``/proc/self/clear_refs``)
and its growth over the resident size at that moment is reported; tracemalloc would miss torch's
allocations. glibc keeps freed blocks below its (adaptive) mmap threshold in the heap, where
fragmentation inflates the high-water mark; CPU cases therefore run twice, with glibc's defaults
and with ``MALLOC_MMAP_THRESHOLD_=131072`` (large tensors mmapped and returned to the OS when
freed), the latter showing what the algorithm itself holds. On CUDA the numbers are
``torch.cuda.max_memory_allocated`` growth. The network is
the demo default (`medgen.autoencoder.training_3d.DEFAULT_AUTOENCODER`), randomly initialised:
memory does not depend on the weights. Batch 1, eval mode, no_grad. Prints one JSON object.

    uv run python benchmarks/decode_memory.py [--sizes 48x56x48 96x112x96] [--tile 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(size: tuple[int, ...], method: str, device: str, tile: int, overlap: float) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from medgen.autoencoder.tiled import decode_tiled
    from medgen.autoencoder.training_3d import DEFAULT_AUTOENCODER
    from medgen.models.patch_volume_autoencoder import build_patch_volume_autoencoder

    torch.manual_seed(0)
    model = build_patch_volume_autoencoder(DEFAULT_AUTOENCODER, in_channels=4).eval().to(device)
    f = model.downsample_factor
    z = torch.randn(1, model.latent_channels, *(s // f for s in size), device=device)

    def decode() -> torch.Tensor:
        with torch.no_grad():
            if method == "full":
                return model.decode(z)
            out_device = "cpu" if method == "tiled_output_on_cpu" else None
            return decode_tiled(model, z, tile, overlap=overlap, output_device=out_device)

    if device == "cuda":
        decode()  # warm-up: cuDNN workspaces and kernels are not the decoder's memory
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = decode()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() - before
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        out = decode()
        seconds = time.perf_counter() - start
        peak = _status_kib("VmHWM") * 1024 - before
    return {
        "size": list(size),
        "method": method,
        "device": device,
        "peak_growth_mib": round(peak / MIB, 1),
        "output_mib": round(out.numel() * out.element_size() / MIB, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["48x56x48", "96x112x96"])
    parser.add_argument("--tile", type=int, default=8, help="latent tile side (default 8)")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--child", nargs=3, metavar=("SIZE", "METHOD", "DEVICE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        size, method, device = args.child
        shape = tuple(int(s) for s in size.split("x"))
        print(json.dumps(run_case(shape, method, device, args.tile, args.overlap)))
        return

    from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

    from medgen.autoencoder.training_3d import DEFAULT_AUTOENCODER

    variants = [("cpu", "glibc default"), ("cpu", "glibc mmap threshold 128 KiB")]
    if torch.cuda.is_available():
        variants.append(("cuda", "torch CUDA caching allocator"))
    cases = []
    for device, allocator in variants:
        env = dict(os.environ)
        if "128 KiB" in allocator:
            env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
        methods = ["full", "tiled"] + (["tiled_output_on_cpu"] if device == "cuda" else [])
        for size in args.sizes:
            for method in methods:
                command = [sys.executable, __file__, "--child", size, method, device]
                command += ["--tile", str(args.tile), "--overlap", str(args.overlap)]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
                if done.returncode != 0:
                    cases.append(
                        {
                            "size": size,
                            "method": method,
                            "device": device,
                            "allocator": allocator,
                            "error": done.stderr[-2000:],
                        }
                    )
                else:
                    case = json.loads(done.stdout.strip().splitlines()[-1])
                    cases.append({**case, "allocator": allocator})
    report = {
        "benchmark": "decode_memory",
        "network": DEFAULT_AUTOENCODER,
        "latent_tile": args.tile,
        "overlap": args.overlap,
        "halo": "decoder_halo (the decoder's receptive radius: tiled == full decode)",
        "measure": "CPU: peak RSS growth (VmHWM after reset) in a fresh process; "
        "CUDA: max_memory_allocated growth after a warm-up",
        "cases": cases,
        "machine": machine_info(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

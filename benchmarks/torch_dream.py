"""The default dream in eager PyTorch, as a whole process: what a pytorch-deepdream
user runs. Reads a photo, dreams it with the notebook's defaults through
`torch_reference`, writes a PNG. `first_dream.py` times it against dream_jax.

  python -m benchmarks.torch_dream --input=photo.jpg --output=out.png
"""
import argparse
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TORCH_READY = time.perf_counter()

from benchmarks import torch_reference  # noqa: E402  (imports dream_jax's layer tables: jax)
from dream_jax.model.weights import store  # noqa: E402

JAX_IMPORTED = time.perf_counter()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights", default=str(store.default_dir()))
    args = parser.parse_args()
    p = torch_reference.torch_params(store.load_params(args.weights))  # numpy, verified
    rgb = np.asarray(Image.open(args.input).convert("RGB"))
    mean = torch_reference.preprocess.DREAM_MEAN_BGR
    x = torch.from_numpy(np.ascontiguousarray((rgb[..., ::-1] - mean).transpose(2, 0, 1)[None]))
    out = torch_reference.deepdream(p, x.float(), "inception_4c/output",
                                    torch.Generator().manual_seed(0))
    bgr = out[0].numpy().transpose(1, 2, 0) + mean
    Image.fromarray(np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)).save(args.output)
    print(f"torch_import_s={TORCH_READY - START:.2f} jax_import_s={JAX_IMPORTED - TORCH_READY:.2f}")


if __name__ == "__main__":
    main()

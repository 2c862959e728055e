"""List every tap (Caffe blob name) with its output shape for an input size.

  python scripts/layers.py [--height=224 --width=224]
"""
from absl import flags

from dream_jax import cli
from dream_jax.model import DEFAULT as NET

_HEIGHT = flags.DEFINE_integer("height", NET.input_size, "Input height.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", NET.input_size, "Input width.", lower_bound=1)


def main():
    shapes = NET.layer_shapes(_HEIGHT.value, _WIDTH.value)
    width = max(map(len, shapes))
    for tap, shape in shapes.items():
        print(f"{tap:<{width}}  {'x'.join(map(str, shape)) if shape else 'too small'}")


if __name__ == "__main__":
    cli.run(main)

"""The network: GoogLeNet in Flax, its Caffe ops, geometry, preprocessing and weights."""

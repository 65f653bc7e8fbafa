"""aecore: a fused-kernel training engine for the 784 -> h -> 784 Fashion-MNIST autoencoder."""

__version__ = "0.1.0"

IMAGE_SIZE = 784  # 28 x 28 pixels, the autoencoder's input and output width
HIDDEN_SIZES = (64, 128, 256, 512)  # the paper's four models

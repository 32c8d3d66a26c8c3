"""Public `keras_transfer.layers` API."""

from keras_transfer.layers.gradient_reversal import GradientReversal
from keras_transfer.layers.adapter import Adapter
from keras_transfer.layers.lora_conv2d import LoRAConv2D
from keras_transfer.layers.lora_dense import LoRADense
from keras_transfer.layers.lora_einsum_dense import LoRAEinsumDense

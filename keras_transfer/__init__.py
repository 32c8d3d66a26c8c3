"""Transfer learning for Keras 3.

The layers, losses, models and callbacks are written with `keras.ops` and run
on every Keras backend; TensorFlow is imported only where `tf.data` pipelines
are built.
"""

from keras_transfer import backbones
from keras_transfer import callbacks
from keras_transfer import data
from keras_transfer import datasets
from keras_transfer import distribution
from keras_transfer import layers
from keras_transfer import losses
from keras_transfer import models
from keras_transfer import optimizers
from keras_transfer import regularizers
from keras_transfer import strategies
from keras_transfer.version import __version__

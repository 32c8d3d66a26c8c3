"""Public `keras_transfer.backbones` API."""

from keras_transfer.backbones.efficientnet_lite0 import efficientnet_lite0
from keras_transfer.backbones.base import Base
from keras_transfer.backbones.base import load_base
from keras_transfer.backbones.minilm import minilm
from keras_transfer.backbones.minilm import minilm_preprocessor
from keras_transfer.backbones.minilm import minilm_path
from keras_transfer.backbones.speech_embedding import speech_embedding
from keras_transfer.backbones.speech_embedding import speech_embedding_files

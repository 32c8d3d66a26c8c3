"""Public `keras_transfer.data` API."""

from keras_transfer.data.image import ImageAugmentation
from keras_transfer.data.audio import AudioAugmentation
from keras_transfer.data.audio import add_noise
from keras_transfer.data.audio import log_spectrogram
from keras_transfer.data.audio import pitch_shift
from keras_transfer.data.audio import spec_augment
from keras_transfer.data.audio import time_stretch
from keras_transfer.data.back_translation import BackTranslation
from keras_transfer.data.text import NEGATIONS
from keras_transfer.data.text import STOPWORDS
from keras_transfer.data.text import TextAugmentation
from keras_transfer.data.text import load_wordnet_synonyms

"""Public `keras_transfer.datasets` API: real data loaders with fixed, seeded splits."""

from keras_transfer.datasets.digits import load_digits
from keras_transfer.datasets.fashion_mnist import FASHION_MNIST_CLASSES
from keras_transfer.datasets.fashion_mnist import load_fashion_mnist
from keras_transfer.datasets.image_folder import load_image_folder
from keras_transfer.datasets.mnist import load_mnist5k
from keras_transfer.datasets.resize import resize_images
from keras_transfer.datasets.resize import resize_like_files
from keras_transfer.datasets.rotten_tomatoes import ROTTEN_TOMATOES_CLASSES
from keras_transfer.datasets.rotten_tomatoes import load_rotten_tomatoes
from keras_transfer.datasets.spoken_digits import FSDD_SPEAKERS
from keras_transfer.datasets.spoken_digits import load_spoken_digits
from keras_transfer.datasets.spoken_digits import spoken_digit_speakers
from keras_transfer.datasets.text_csv import load_text_csv
from keras_transfer.datasets.tf_data import to_dataset
from keras_transfer.datasets.usps import load_usps
from keras_transfer.datasets.audio_folder import load_audio_folder
from keras_transfer.datasets.audio_folder import pad_clips
from keras_transfer.datasets.audio_folder import read_wav

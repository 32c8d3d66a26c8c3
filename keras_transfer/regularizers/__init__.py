"""Public `keras_transfer.regularizers` API."""

from keras_transfer.regularizers.l2sp import L2SPModel
from keras_transfer.regularizers.l2sp import apply_l2sp

"""Public `keras_transfer.models` API."""

from keras_transfer.models.distiller import Distiller
from keras_transfer.models.dann import DomainAdversarialModel
from keras_transfer.models.discrepancy_alignment import DiscrepancyAlignmentModel
from keras_transfer.models.multi_task import MultiTaskModel
from keras_transfer.models.cdan import CDANModel
from keras_transfer.models.mcd import MCDModel
from keras_transfer.models.raw_input_classifier import RawInputClassifier
from keras_transfer.models.information_maximization import InformationMaximizationModel
from keras_transfer.models.self_training import self_training_loss

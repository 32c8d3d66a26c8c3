"""Public `keras_transfer.strategies` API."""

from keras_transfer.strategies.feature_cache import FeatureCache
from keras_transfer.strategies.feature_extraction import build_classifier
from keras_transfer.strategies.feature_extraction import fit_feature_extraction
from keras_transfer.strategies.fine_tuning import fine_tune
from keras_transfer.strategies.fine_tuning import unfreeze_base
from keras_transfer.strategies.registry import available_strategies
from keras_transfer.strategies.registry import get_strategy
from keras_transfer.strategies.registry import register_strategy
from keras_transfer.strategies.inference_mode import InferenceMode
from keras_transfer.strategies.similarity import domain_similarity
from keras_transfer.strategies.negative_transfer import check_negative_transfer
from keras_transfer.strategies.peft import add_adapters
from keras_transfer.strategies.peft import apply_lora
from keras_transfer.strategies.peft import load_peft_weights
from keras_transfer.strategies.peft import merge_lora
from keras_transfer.strategies.peft import save_peft_weights
from keras_transfer.strategies.peft import trainable_summary
from keras_transfer.strategies.layer_groups import layer_groups

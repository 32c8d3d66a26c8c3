"""Parameter-efficient fine-tuning: LoRA and adapter surgery on any model.

- `surgery.py`: choosing layers at any depth, swapping them, freezing the
  rest, leaving compiled models ready to use;
- `lora.py`: `apply_lora`, `merge_lora`;
- `adapters.py`: `add_adapters`;
- `owner.py`: whole-model saving of surgery inside keras-hub backbones;
- `weights_io.py`: `save_peft_weights`, `load_peft_weights`;
- `summary.py`: `trainable_summary`.
"""

from keras_transfer.strategies.peft.adapters import add_adapters
from keras_transfer.strategies.peft.lora import apply_lora
from keras_transfer.strategies.peft.lora import merge_lora
from keras_transfer.strategies.peft.summary import trainable_summary
from keras_transfer.strategies.peft.weights_io import load_peft_weights
from keras_transfer.strategies.peft.weights_io import save_peft_weights


"""Parameter-efficient fine-tuning: LoRA and adapter surgery on any model.

- `surgery.py`: choosing layers at any depth, swapping them, freezing the
  rest, leaving compiled models ready to use;
- `lora.py`: `apply_lora`, `merge_lora`;
- `adapters.py`: `add_adapters`;
- `named.py`: several named LoRA adapters on one model (`add_lora_adapter`,
  `set_adapter`, `disable_adapters`, `train_adapter`, `delete_adapter`,
  `add_weighted_adapter`);
- `owner.py`: whole-model saving of surgery inside keras-hub backbones;
- `weights_io.py`: `save_peft_weights`, `load_peft_weights`;
- `summary.py`: `trainable_summary`.
"""

from keras_transfer.strategies.peft.adapters import add_adapters
from keras_transfer.strategies.peft.lora import apply_lora
from keras_transfer.strategies.peft.named import active_adapters
from keras_transfer.strategies.peft.named import add_lora_adapter
from keras_transfer.strategies.peft.named import add_weighted_adapter
from keras_transfer.strategies.peft.named import delete_adapter
from keras_transfer.strategies.peft.named import disable_adapters
from keras_transfer.strategies.peft.named import list_adapters
from keras_transfer.strategies.peft.named import set_adapter
from keras_transfer.strategies.peft.named import train_adapter
from keras_transfer.strategies.peft.lora import merge_lora
from keras_transfer.strategies.peft.summary import trainable_summary
from keras_transfer.strategies.peft.weights_io import load_peft_weights
from keras_transfer.strategies.peft.weights_io import save_peft_weights


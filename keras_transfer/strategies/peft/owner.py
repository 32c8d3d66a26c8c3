"""Whole-model saving of surgery inside layers that rebuild their sublayers.

A Sequential or Functional model serializes each of its layers, so LoRA
layers and adapters in its graph round-trip through `model.save(".keras")`
as they are. A subclassed layer or model (a keras-hub backbone) rebuilds
its sublayers from its own constructor arguments, which know nothing of the
surgery. So the surgery is recorded on the outermost such object that holds
the changed layers (the "owner": the backbone itself, or the backbone inside
a Functional classifier): its class becomes a subclass of its own class
whose `get_config` is

    {"base": <the object serialized as its original class>,
     "peft": <the surgery: per changed sublayer, its structural key and
              settings; which weights train>}

registered under the one name `keras_transfer>PEFTModel`. On load,
`from_config` deserializes the base object, redoes the recorded surgery
(the same variable structure again) and returns it; Keras then loads the
LoRA and adapter weights into it as usual. `merge_lora` removes the LoRA
entries, and the owner becomes its plain class again once nothing is left.
"""

import json

import keras

from keras_transfer import _walk
from keras_transfer.strategies.peft import surgery

_SURGERY_ATTR = "_keras_transfer_peft"
_PEFT_CLASSES = {}  # plain class -> its PEFT subclass
_PLAIN_CLASSES = {}  # PEFT subclass -> plain class


def _surgery(owner):
    return json.loads(getattr(owner, _SURGERY_ATTR, "[]"))


def _set_surgery(owner, entries):
    """Records `entries` on `owner`, switching its class as needed."""
    cls = type(owner)
    if entries:
        if cls not in _PLAIN_CLASSES:
            owner.__class__ = _peft_class(cls)
        # A string: Keras's attribute tracker leaves it alone.
        setattr(owner, _SURGERY_ATTR, json.dumps(entries))
    elif cls in _PLAIN_CLASSES:
        owner.__class__ = _PLAIN_CLASSES[cls]
        delattr(owner, _SURGERY_ATTR)


def record_new(entry):
    """A `record` for `surgery.swap` that adds `entry(new_layer)`."""

    def record(chain, old, new):
        if chain:
            owner, key = chain[0]
            _set_surgery(owner, _surgery(owner) + [{"path": key, **entry(new)}])

    return record


def record_merge(chain, old, new):
    for ancestor, key in chain:
        if type(ancestor) in _PLAIN_CLASSES:
            _set_surgery(
                ancestor,
                [
                    e
                    for e in _surgery(ancestor)
                    if not (e["kind"] == "lora" and e["path"] == key)
                ],
            )


def _redo(owner, peft):
    """Redoes recorded surgery on a freshly deserialized `owner`."""
    from keras_transfer.strategies.peft.adapters import make_adapter
    from keras_transfer.strategies.peft.lora import make_lora

    for entry in peft["surgery"]:
        settings = {k: v for k, v in entry.items() if k not in ("path", "kind")}
        found = [s for s in surgery.sites(owner) if s.key == entry["path"]]
        if not found:
            raise ValueError(
                f"Cannot redo the saved {entry['kind']} surgery on "
                f"'{owner.name}': it has no sublayer at {entry['path']!r}. "
                "The saved model's structure does not match its class."
            )
        site = found[0]
        make = make_lora if entry["kind"] == "lora" else make_adapter
        new = surgery.build_new(site, lambda layer: make(layer, **settings))
        _walk.rebuild(owner, {id(site.layer): new})
        _set_surgery(owner, _surgery(owner) + [entry])
    _set_trainable_state(owner, peft["trainable"])


def _with_named_adapters(owner, entries):
    """`entries` with each LoRA or adapter layer's named adapters as they
    are now (`add_lora_adapter`, `add_adapters(..., adapter_name=...)` and
    their siblings change them after the surgery)."""
    from keras_transfer.layers._named_adapters import NamedAdaptersMixin

    layers = {s.key: s.layer for s in surgery.sites(owner)}
    result = []
    for entry in entries:
        entry = {k: v for k, v in entry.items() if k != "named_adapters"}
        layer = layers.get(entry["path"])
        if entry["kind"] == "adapter" and isinstance(layer, keras.Sequential):
            # `Sequential([layer, Adapter])` (`make_adapter`).
            layer = layer.layers[-1]
        if isinstance(layer, NamedAdaptersMixin):
            state = layer.named_adapter_state()
            if state is not None:
                entry["named_adapters"] = state
        result.append(entry)
    return result


def _trainable_state(owner):
    """Which layers are frozen and which weights train, by structural key.

    Inside the LoRA layers and adapters this is fixed by their `build`.
    """
    frozen, variables = [], {}
    for key, layer in [("", owner)] + [
        (s.key, s.layer) for s in surgery.sites(owner)
    ]:
        if not layer.trainable:
            frozen.append(key)
        if surgery.is_peft(layer):
            continue
        for i, v in enumerate(surgery.own_weights(layer)):
            variables[f"{key}:{i}"] = bool(v.trainable)
    return {"frozen_layers": frozen, "variables": variables}


def _set_trainable_state(owner, state):
    layers = dict(
        [("", owner)] + [(s.key, s.layer) for s in surgery.sites(owner)]
    )
    for key in state["frozen_layers"]:
        layers[key].trainable = False
    for key, flag in state["variables"].items():
        layer_key, i = key.rsplit(":", 1)
        surgery.own_weights(layers[layer_key])[int(i)].trainable = flag


@keras.saving.register_keras_serializable(
    package="keras_transfer", name="PEFTModel"
)
class PEFTOwner:
    """Mixin of the classes `_peft_class` makes; see the module docstring.

    Every such class is registered under the one name
    `keras_transfer>PEFTModel`, which resolves to this mixin's
    `from_config`.
    """

    def get_config(self):
        peft_cls = type(self)
        self.__class__ = _PLAIN_CLASSES[peft_cls]
        try:
            base = keras.saving.serialize_keras_object(self)
        finally:
            self.__class__ = peft_cls
        # Compiling (which builds the optimizer) waits for the surgery.
        base.pop("compile_config", None)
        return {
            "base": base,
            "peft": {
                "surgery": _with_named_adapters(self, _surgery(self)),
                "trainable": _trainable_state(self),
            },
        }

    @classmethod
    def from_config(cls, config):
        owner = keras.saving.deserialize_keras_object(config["base"])
        _redo(owner, config["peft"])
        return owner


def _peft_class(cls):
    if cls not in _PEFT_CLASSES:
        peft_cls = type(
            f"PEFT{cls.__name__}", (PEFTOwner, cls), {"__module__": __name__}
        )
        register = keras.saving.register_keras_serializable(
            package="keras_transfer", name="PEFTModel"
        )
        register(peft_cls)
        # Registering also points the name at `peft_cls`; point it back at
        # the mixin so that loading never depends on which class came last.
        register(PEFTOwner)
        _PEFT_CLASSES[cls] = peft_cls
        _PLAIN_CLASSES[peft_cls] = cls
    return _PEFT_CLASSES[cls]

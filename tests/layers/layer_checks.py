"""One shared check for every attnlab layer (as keras-nlp's LayerTestCase does).

`check_layer` builds the layer in a functional model and verifies:
- get_config / from_config round trip gives the same config and the same outputs;
- SavedModel and H5 save/load give the same outputs, without custom_objects
  (layers are registered under package "attnlab");
- one `fit()` step runs, gives a finite loss and changes the trainable weights;
- under the `mixed_float16` policy the layer computes in float16, keeps float32
  variables and agrees with the float32 layer carrying the same weights.
"""
import numpy as np
import tensorflow as tf


def _as_call(inputs):
    """Split example inputs into (args, kwargs) for calling a layer."""
    if isinstance(inputs, dict):
        return [], dict(inputs)
    if isinstance(inputs, (list, tuple)):
        return list(inputs), {}
    return [inputs], {}


def _keras_inputs(data):
    """tf.keras.Input placeholders with the shapes and dtypes of `data` (batch left free)."""
    def make(array, name=None):
        array = np.asarray(array)
        return tf.keras.Input(shape=array.shape[1:], dtype=tf.as_dtype(array.dtype), name=name)
    if isinstance(data, dict):
        # Named inputs, so that fit() can match a dict of arrays to them.
        return {name: make(array, name) for name, array in data.items()}
    return tf.nest.map_structure(make, data)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def build_model(layer, inputs, call_kwargs=None):
    """A functional model whose first output is `layer`'s (first) output on `inputs`."""
    placeholders = _keras_inputs(inputs)
    args, kwargs = _as_call(placeholders)
    kwargs.update(call_kwargs or {})
    outputs = layer(*args, **kwargs)
    return tf.keras.Model(placeholders, outputs)


def _predict(model, inputs):
    args, kwargs = _as_call(inputs)
    feed = kwargs if kwargs else (args if len(args) > 1 else args[0])
    return tf.nest.map_structure(lambda t: np.asarray(t), model(feed, training=False))


def assert_outputs_close(a, b, atol=1e-5, rtol=1e-5):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   atol=atol, rtol=rtol)


def check_config_round_trip(layer_cls, init_kwargs, inputs, call_kwargs=None):
    layer = layer_cls(**init_kwargs)
    model = build_model(layer, inputs, call_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, "%s.get_config() lacks constructor argument %r" % (
            layer_cls.__name__, key)
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    clone_model = build_model(clone, inputs, call_kwargs)
    clone_model.set_weights(model.get_weights())
    assert_outputs_close(_predict(model, inputs), _predict(clone_model, inputs))


def check_save_load(layer_cls, init_kwargs, inputs, tmp_path, call_kwargs=None):
    model = build_model(layer_cls(**init_kwargs), inputs, call_kwargs)
    expected = _predict(model, inputs)
    saved_model_dir = str(tmp_path / "saved_model")
    model.save(saved_model_dir, save_format="tf")
    restored = tf.keras.models.load_model(saved_model_dir)
    assert_outputs_close(expected, _predict(restored, inputs))
    h5_path = str(tmp_path / "model.h5")
    model.save(h5_path, save_format="h5")
    restored = tf.keras.models.load_model(h5_path)
    assert_outputs_close(expected, _predict(restored, inputs))


def check_fit_step(layer_cls, init_kwargs, inputs, call_kwargs=None):
    model = build_model(layer_cls(**init_kwargs), inputs, call_kwargs)
    first_output = _first(model.outputs)
    trainable = tf.keras.Model(model.inputs, first_output)
    target = np.random.RandomState(1).normal(size=(
        np.asarray(tf.nest.flatten(inputs)[0]).shape[0],) + tuple(first_output.shape[1:]))
    before = [w.numpy().copy() for w in trainable.trainable_weights]
    trainable.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    args, kwargs = _as_call(inputs)
    feed = kwargs if kwargs else (args if len(args) > 1 else args[0])
    history = trainable.fit(feed, target.astype("float32"), epochs=1, batch_size=len(target),
                            verbose=0)
    assert np.isfinite(history.history["loss"][0])
    if before:
        changed = [not np.allclose(b, w.numpy()) for b, w in
                   zip(before, trainable.trainable_weights)]
        assert any(changed), "fit() did not change any trainable weight"


def check_mixed_precision(layer_cls, init_kwargs, inputs, call_kwargs=None, atol=2e-2,
                          rtol=2e-2):
    full = build_model(layer_cls(**init_kwargs), inputs, call_kwargs)
    mixed_layer = layer_cls(**dict(init_kwargs, dtype="mixed_float16"))
    mixed = build_model(mixed_layer, inputs, call_kwargs)
    mixed.set_weights(full.get_weights())
    assert mixed_layer.compute_dtype == "float16"
    for weight in mixed_layer.weights:
        assert weight.dtype == tf.float32, "%s is %s under mixed_float16" % (
            weight.name, weight.dtype.name)
    got = _predict(mixed, inputs)
    for array in tf.nest.flatten(got):
        if np.issubdtype(array.dtype, np.floating):
            assert np.isfinite(array).all(), "non-finite output under mixed_float16"
    assert _first(tf.nest.flatten(mixed.outputs)).dtype == tf.float16
    assert_outputs_close(_predict(full, inputs), got, atol=atol, rtol=rtol)


def check_layer(layer_cls, init_kwargs, inputs, tmp_path, call_kwargs=None,
                expected_output_shape=None, mixed_precision=True):
    """Run every shared check; `inputs` is an array, a list (positional) or a dict (keywords)."""
    if expected_output_shape is not None:
        model = build_model(layer_cls(**init_kwargs), inputs, call_kwargs)
        got = _first(_predict(model, inputs))
        assert tuple(got.shape) == tuple(expected_output_shape)
    check_config_round_trip(layer_cls, init_kwargs, inputs, call_kwargs)
    check_save_load(layer_cls, init_kwargs, inputs, tmp_path, call_kwargs)
    check_fit_step(layer_cls, init_kwargs, inputs, call_kwargs)
    if mixed_precision:
        check_mixed_precision(layer_cls, init_kwargs, inputs, call_kwargs)

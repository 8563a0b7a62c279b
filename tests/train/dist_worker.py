"""One process of the tf.distribute test (run as a subprocess).

Usage: python dist_worker.py OUT_NPZ [multi_worker|mirrored]

With "multi_worker" the process is one worker of a MultiWorkerMirroredStrategy cluster
described by $TF_CONFIG; with "mirrored" it splits its CPU into two logical devices and
trains with MirroredStrategy on both; otherwise it trains alone. Either way it trains the
same model on the same global batches and saves the final weights to OUT_NPZ.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 16


def main(out, mode="single"):
    from attnlab.train.runner import make_strategy

    strategy = None
    if mode == "multi_worker":
        strategy = make_strategy("multi_worker")  # as `attnlab train` makes it
    elif mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    from attnlab.data.trigger import make_trigger
    from attnlab.train.trainer import Trainer

    tf.keras.utils.set_random_seed(5)
    task = make_trigger(seed=0, n_train=128, n_val=16, n_test=16, num_filler=12,
                        min_length=4, max_length=8)
    scope = strategy.scope() if strategy is not None else tf.name_scope("single")
    with scope:
        model = tf.keras.Sequential([
            tf.keras.layers.Embedding(len(task.source_vocab), 8),
            tf.keras.layers.GlobalAveragePooling1D(),
            tf.keras.layers.Dense(task.num_classes),
        ])
        model.build((None, 8))
        optimizer = tf.keras.optimizers.SGD(0.5)
    trainer = Trainer(model, optimizer,
                      tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], strategy=strategy, clip_norm=5.0, verbose=0)
    history = trainer.fit(task.train_fn(GLOBAL_BATCH, seed=2), epochs=2)
    np.savez(out, *model.get_weights(), loss=history["loss"][-1],
             replicas=trainer.strategy.num_replicas_in_sync)


if __name__ == "__main__":
    from attnlab.train.process_exit import run_and_exit

    run_and_exit(lambda: main(*sys.argv[1:]))

"""The peer of benchmarks/train_throughput.py: the Table 1 VAE's training step in Keras 3 on
TensorFlow (the paper's framework), fp32, the same loss (BCE summed over the pixels from logits
+ 0.1 KL summed over the latent dimensions, means over the batch) and Adam, one compiled
``tf.function`` step as ``model.fit`` runs it. Prints one JSON line per size: images/s of each
timing window.

Needs TensorFlow, which microvae never needs: `pip install -e ".[bench]"` (or any Python with
tensorflow-cpu and keras); train_throughput.py runs this script with --peer-python.

    python benchmarks/keras_peer.py [--sizes 32 64 128] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def table1(size: int, latent: int):
    import keras
    from keras import layers

    grid = size // 8
    image = keras.Input((size, size, 1))
    h = image
    for channels in (64, 128, 256):
        h = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Dense(256, activation="relu")(layers.Flatten()(h))
    encoder = keras.Model(image, [layers.Dense(latent)(h), layers.Dense(latent)(h)])
    z = keras.Input((latent,))
    h = layers.Dense(grid * grid * 256, activation="relu")(z)
    h = layers.Reshape((grid, grid, 256))(h)
    for channels in (256, 128, 64):
        h = layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation="relu")(h)
    decoder = keras.Model(z, layers.Conv2DTranspose(1, 3, strides=1, padding="same")(h))
    return encoder, decoder


def step_function(size: int, batch: int, latent: int = 12):
    import numpy as np
    import tensorflow as tf

    encoder, decoder = table1(size, latent)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    weights = encoder.trainable_variables + decoder.trainable_variables
    x = tf.constant((np.random.default_rng(0).random((batch, size, size, 1)) > 0.75)
                    .astype("float32"))
    eps = tf.constant(np.random.default_rng(1).standard_normal((batch, latent)).astype("float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            z_mean, z_log_var = encoder(x, training=True)
            logits = decoder(z_mean + tf.exp(0.5 * z_log_var) * eps, training=True)
            bce = tf.reduce_mean(tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), [1, 2, 3]))
            kl = tf.reduce_mean(tf.reduce_sum(
                0.5 * (tf.square(z_mean) + tf.exp(z_log_var) - 1.0 - z_log_var), 1))
            loss = bce + 0.1 * kl
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    for _ in range(3):
        step().numpy()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    for size in args.sizes:
        step = step_function(size, args.batch)
        rates = []
        for _ in range(args.rounds):
            steps, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds / args.rounds or steps < 3:
                step().numpy()
                steps += 1
            rates.append(steps * args.batch / (time.perf_counter() - started))
        print(json.dumps({"size": size, "batch": args.batch, "rounds": rates,
                          "tensorflow": tf.__version__}), flush=True)


if __name__ == "__main__":
    main()

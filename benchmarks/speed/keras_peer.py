"""The peer of benchmarks/speed/train_throughput.py: the Table 1 VAE's training step in Keras 3 on
TensorFlow (the paper's framework) in every configuration a Keras user can pick with a line or
two (CONFIGS): fp32; mixed_bfloat16 (`keras.mixed_precision.set_global_policy`, the output
layer, the latent heads and the loss in fp32 as Keras's mixed-precision guide asks); and each
with XLA (`tf.function(jit_compile=True)`). The same loss (BCE summed over the pixels from
logits + 0.1 KL summed over the latent dimensions, means over the batch) and Adam, one compiled
``tf.function`` step as ``model.fit`` runs it. Prints one JSON line per size and configuration:
images/s of each timing window.

Needs TensorFlow, which microvae never needs: `pip install -e ".[bench]"` (or any Python with
tensorflow-cpu and keras); train_throughput.py runs this script with --peer-python.

    python benchmarks/speed/keras_peer.py [--sizes 32 64 128] [--configs fp32 ...] [--batch 32]
        [--threads 2] [--layers]

--serve: a timing server for train_throughput.py, which interleaves its windows with the
PyTorch ones (a noisy host then slows both alike). It reads one JSON command per line:
{"prepare": SIZE, "config": NAME} (build and warm up the step; answers the TensorFlow version,
and the error where the configuration does not run on this CPU: under ONEDNN_MAX_CPU_ISA=AVX2
TensorFlow's oneDNN has no bf16 convolution),
{"window": SIZE, "config": NAME, "seconds": S} (answers the images/s of one timing window),
{"layers": SIZE} (answers the per-layer milliseconds, fp32).

--layers adds one JSON line per layer: milliseconds of its forward + backward alone (input and
weight gradients, none for the input of the first layer), as train_throughput.py --layers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name: (Keras dtype policy, XLA)
CONFIGS = {"fp32": ("float32", False), "mixed_bfloat16": ("mixed_bfloat16", False),
           "fp32_xla": ("float32", True), "mixed_bfloat16_xla": ("mixed_bfloat16", True)}


def table1(size: int, latent: int, policy: str = "float32"):
    """The Table 1 encoder and decoder under a Keras dtype ``policy``; under a mixed one the
    latent heads and the output layer compute in float32 (Keras's mixed-precision guide)."""
    import keras
    from keras import layers

    keras.mixed_precision.set_global_policy(policy)
    try:
        grid = size // 8
        image = keras.Input((size, size, 1))
        h = image
        for channels in (64, 128, 256):
            h = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(h)
        h = layers.Dense(256, activation="relu")(layers.Flatten()(h))
        heads = [layers.Dense(latent, dtype="float32")(h) for _ in range(2)]
        encoder = keras.Model(image, heads)
        z = keras.Input((latent,))
        h = layers.Dense(grid * grid * 256, activation="relu")(z)
        h = layers.Reshape((grid, grid, 256))(h)
        for channels in (256, 128, 64):
            h = layers.Conv2DTranspose(channels, 3, strides=2, padding="same",
                                       activation="relu")(h)
        logits = layers.Conv2DTranspose(1, 3, strides=1, padding="same", dtype="float32")(h)
        decoder = keras.Model(z, logits)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return encoder, decoder


def step_function(size: int, batch: int, latent: int = 12, config: str = "fp32"):
    import numpy as np
    import tensorflow as tf

    policy, xla = CONFIGS[config]
    encoder, decoder = table1(size, latent, policy)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    weights = encoder.trainable_variables + decoder.trainable_variables
    x = tf.constant((np.random.default_rng(0).random((batch, size, size, 1)) > 0.75)
                    .astype("float32"))
    eps = tf.constant(np.random.default_rng(1).standard_normal((batch, latent)).astype("float32"))

    @tf.function(jit_compile=xla)
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


def layer_times(size: int, batch: int, seconds: float = 1.0) -> list[tuple[str, float]]:
    import statistics

    import tensorflow as tf
    from keras import layers

    grid = size // 8
    specs = [("conv1", layers.Conv2D(64, 3, strides=2, padding="same"), (size, size, 1)),
             ("conv2", layers.Conv2D(128, 3, strides=2, padding="same"), (size // 2, size // 2, 64)),
             ("conv3", layers.Conv2D(256, 3, strides=2, padding="same"), (size // 4, size // 4, 128)),
             ("dense_encoder", layers.Dense(256), (256 * grid * grid,)),
             ("dense_decoder", layers.Dense(256 * grid * grid), (12,)),
             ("tconv1", layers.Conv2DTranspose(256, 3, strides=2, padding="same"), (grid, grid, 256)),
             ("tconv2", layers.Conv2DTranspose(128, 3, strides=2, padding="same"),
              (2 * grid, 2 * grid, 256)),
             ("tconv3", layers.Conv2DTranspose(64, 3, strides=2, padding="same"),
              (4 * grid, 4 * grid, 128)),
             ("tconv4", layers.Conv2DTranspose(1, 3, strides=1, padding="same"), (size, size, 64))]
    times = []
    for name, layer, shape in specs:
        x = tf.random.normal((batch, *shape))
        layer.build(x.shape)
        watched = name != "conv1"

        @tf.function
        def step(layer=layer, x=x, watched=watched):
            with tf.GradientTape() as tape:
                if watched:
                    tape.watch(x)
                total = tf.reduce_sum(layer(x))
            return tape.gradient(total, ([x] if watched else []) + layer.trainable_variables)

        for _ in range(3):
            step()[0].numpy()
        windows = []
        for _ in range(5):
            steps, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 5 or steps < 2:
                step()[0].numpy()
                steps += 1
            windows.append((time.perf_counter() - started) / steps * 1e3)
        times.append((name, statistics.median(windows)))
    return times


def window(step, batch: int, seconds: float) -> float:
    """Images/s of ``step`` over one timing window of ``seconds`` (at least 3 steps)."""
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or steps < 3:
        step().numpy()
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def serve(batch: int) -> None:
    import sys

    import tensorflow as tf

    steps = {}
    for line in sys.stdin:
        command = json.loads(line)
        if "prepare" in command:
            key = (command["prepare"], command.get("config", "fp32"))
            answer = {"tensorflow": tf.__version__}
            if key not in steps:
                try:
                    steps[key] = step_function(key[0], batch, config=key[1])
                except Exception as error:  # noqa: BLE001 - the configuration does not run here
                    answer["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        elif "window" in command:
            step = steps[command["window"], command.get("config", "fp32")]
            step().numpy()
            answer = {"images_per_s": window(step, batch, command["seconds"])}
        else:
            answer = {"layers_ms": {name: round(ms, 2)
                                    for name, ms in layer_times(command["layers"], batch)}}
        print(json.dumps(answer), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.serve:
        serve(args.batch)
        return
    for size in args.sizes:
        for config in args.configs:
            step = step_function(size, args.batch, config=config)
            rates = [window(step, args.batch, args.seconds / args.rounds)
                     for _ in range(args.rounds)]
            print(json.dumps({"size": size, "config": config, "batch": args.batch,
                              "rounds": rates, "tensorflow": tf.__version__}), flush=True)
        if args.layers:
            for name, ms in layer_times(size, args.batch):
                print(json.dumps({"size": size, "layer": name, "ms": round(ms, 2)}), flush=True)


if __name__ == "__main__":
    main()

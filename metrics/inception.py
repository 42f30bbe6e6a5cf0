"""Inception-v3 features from the original `classify_image_graph_def.pb` (inception-2015-12-05).

This frozen TensorFlow graph is the network behind published FID numbers (TTUR's `fid.py`) and the
Inception Score (OpenAI's `improved-gan/inception_score/model.py`). The user supplies the file;
nothing is ever downloaded (it is inside
`inception-2015-12-05.tgz` that TensorFlow distributed for its ImageNet classification tutorial).

How the references feed the graph, and what this module does the same way:
- Input: float32 pixels in [0, 255], NHWC, any size, fed to the tensor `ExpandDims:0` (in the
  graph, the batch axis added to the decoded JPEG). We import the GraphDef with
  `tf.graph_util.import_graph_def(..., input_map={"ExpandDims:0": images})` inside
  `tf.compat.v1.wrap_function`, so the JPEG decoder in front of it is never run and any batch
  size works.
- Resize and scaling happen inside the graph, exactly as for the references: `ResizeBilinear` to
  299x299 (TF1 semantics: align_corners=False, no half-pixel centres; imported ops keep their
  attributes), then (x - 128) / 128. We therefore do not resize anything ourselves.
- Features: `pool_3:0`, (N, 1, 1, 2048), reshaped to (N, 2048) (FID, KID).
- Logits: the graph's own `softmax` path reshapes pool_3 to a fixed batch of 1, so, as OpenAI's
  code does, logits = pool_3 @ W with W the weight input of `softmax/logits/MatMul`, (N, 1008),
  without the bias (OpenAI's IS leaves the bias out; stylegan2-ada-pytorch reproduces this with
  `no_output_bias=True`). The Inception Score uses softmax(logits).
"""

import hashlib
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from metrics.images import to_uint8_images

INPUT_TENSOR = "ExpandDims:0"
POOL_TENSOR = "pool_3:0"
LOGITS_MATMUL_OP = "softmax/logits/MatMul"
FEATURE_DIM = 2048
GRAPH_FLAG = "--inception"


def _missing_graph_message(path):
    return (f"Inception graph not found: {path!r}. FID, KID and IS need the original "
            f"classify_image_graph_def.pb (from inception-2015-12-05.tgz); pass its path with "
            f"{GRAPH_FLAG}=/path/to/classify_image_graph_def.pb. Nothing is downloaded.")


class InceptionV3:
    """The frozen Inception-v3 graph as a TF2 function: uint8 images -> pool_3 features, logits.

    Args:
      graph_path: path of classify_image_graph_def.pb.
      minibatch_size: images per call of the graph.

    Raises:
      FileNotFoundError: the file does not exist (the message names the `--inception` flag).
      ValueError: the file is not a GraphDef or lacks the tensors named above.

    Example:
      >>> inception = InceptionV3("/data/classify_image_graph_def.pb")
      >>> out = inception.run(images)     # uint8 (N, H, W, 3) or float in [-1, 1]
      >>> out["features"].shape, out["logits"].shape
      ((N, 2048), (N, 1008))
    """

    def __init__(self, graph_path, minibatch_size=50):
        if not graph_path or not os.path.isfile(graph_path):
            raise FileNotFoundError(_missing_graph_message(graph_path))
        if minibatch_size < 1:
            raise ValueError(f"InceptionV3: minibatch_size must be >= 1, got {minibatch_size}.")
        with open(graph_path, "rb") as f:
            data = f.read()
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(data)
        except Exception as error:  # protobuf raises its own DecodeError type
            raise ValueError(f"{graph_path!r} is not a TensorFlow GraphDef ({error}); "
                             f"{GRAPH_FLAG} must point to classify_image_graph_def.pb.") from None
        node_names = {node.name for node in graph_def.node}
        missing = [name for name in (INPUT_TENSOR.split(":")[0], POOL_TENSOR.split(":")[0],
                                     LOGITS_MATMUL_OP) if name not in node_names]
        if missing:
            raise ValueError(f"{graph_path!r} lacks the nodes {missing} of the Inception-v3 graph "
                             f"classify_image_graph_def.pb; {GRAPH_FLAG} must point to that file.")
        self.graph_path = graph_path
        self.minibatch_size = int(minibatch_size)
        # Identity of the network for feature caches: a different graph must never reuse them.
        self.fingerprint = hashlib.sha1(data).hexdigest()

        def features_and_logits(images):
            pool3, = tf.graph_util.import_graph_def(
                graph_def, input_map={INPUT_TENSOR: images}, return_elements=[POOL_TENSOR],
                name="inception")
            weights = pool3.graph.get_operation_by_name(
                "inception/" + LOGITS_MATMUL_OP).inputs[1]  # [2048, classes]
            features = tf.reshape(pool3, [-1, FEATURE_DIM])
            return features, tf.matmul(features, weights)

        spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
        wrapped = tf.compat.v1.wrap_function(features_and_logits, [spec])
        # Keep only the ops between the images and the outputs (drops the JPEG decoder).
        self._function = wrapped.prune(feeds=wrapped.inputs, fetches=wrapped.outputs)

    def __call__(self, images):
        """Features and logits of one minibatch: float32 numpy (N, 2048) and (N, classes)."""
        images = to_uint8_images(images)
        features, logits = self._function(tf.constant(images.astype(np.float32)))
        return features.numpy(), logits.numpy()

    def run(self, images, progress=None):
        """Features and logits of an image set.

        Args:
          images: uint8 (N, H, W, 3) or float in [-1, 1], or an iterable of such minibatches.
          progress: optional callable(num_done) called after every minibatch.

        Returns:
          dict with float32 numpy `features` (N, 2048) and `logits` (N, classes).
        """
        if hasattr(images, "shape") and len(images.shape) == 4:
            batches = (images[i:i + self.minibatch_size]
                       for i in range(0, int(images.shape[0]), self.minibatch_size))
        else:
            batches = images
        features, logits, done = [], [], 0
        for batch in batches:
            for i in range(0, len(batch), self.minibatch_size):
                f, l = self(batch[i:i + self.minibatch_size])
                features.append(f)
                logits.append(l)
                done += len(f)
            if progress is not None:
                progress(done)
        if not features:
            raise ValueError("InceptionV3.run: no images were given.")
        return {"features": np.concatenate(features), "logits": np.concatenate(logits)}


def feature_statistics(features):
    """Mean and covariance of features as FID uses them: float64, np.cov with N - 1."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"feature_statistics: need (N >= 2, D) features, got {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def cache_key(dataset_id, num_images, inception):
    """Cache identity of a real dataset's Inception features: dataset, image count, network."""
    key = {"dataset": str(dataset_id), "num_images": int(num_images),
           "inception": inception.fingerprint}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return key, f"inception-{digest}.npz"


def cached_real_features(inception, images, dataset_id, num_images, cache_dir=None,
                         progress=None):
    """Inception features, logits and FID statistics of a real dataset, cached on disk.

    The cache file is keyed by `dataset_id` (any string that identifies the dataset's content,
    e.g. its path and a listing fingerprint), `num_images` and the Inception graph's SHA-1, and is
    written atomically (temporary file, then rename), so an interrupted run never leaves a
    half-written cache.

    Args:
      inception: an `InceptionV3`.
      images: callable returning the first `num_images` real images (array or iterable of
        uint8 minibatches); only called on a cache miss.
      dataset_id: string identity of the dataset.
      num_images: number of real images measured.
      cache_dir: folder of the cache files; None disables caching.
      progress: passed to `InceptionV3.run`.

    Returns:
      dict: features (N, 2048) float32, logits (N, classes) float32, mu (2048,) float64,
      sigma (2048, 2048) float64, cached (bool, True when read from disk).
    """
    key, filename = cache_key(dataset_id, num_images, inception)
    path = os.path.join(cache_dir, filename) if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as stored:
            if json.loads(str(stored["key"])) == key:
                return {name: stored[name] for name in ("features", "logits", "mu", "sigma")} | {
                    "cached": True}
    result = inception.run(images(), progress=progress)
    if result["features"].shape[0] != num_images:
        raise ValueError(f"cached_real_features: expected {num_images} real images, the dataset "
                         f"gave {result['features'].shape[0]}.")
    mu, sigma = feature_statistics(result["features"])
    result.update(mu=mu, sigma=sigma)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, key=json.dumps(key, sort_keys=True), **result)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    return result | {"cached": False}

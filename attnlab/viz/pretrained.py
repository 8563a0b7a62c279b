"""Pretrained Hugging Face TF models from the mounted models folder, never from the network.

The workbench does not download weights. A user puts them into the models folder
(`./models` of the checkout, mounted at /workspace/models in the container; see
docs/pretrained.md) in one of two layouts:

    models/NAME/               what `save_pretrained` writes: config.json, tf_model.h5 (or
                               model.safetensors) and the tokenizer files
    models/huggingface/hub/    the Hugging Face cache (HF_HOME=models/huggingface), as
                               `huggingface-cli download NAME` fills it on a connected machine

Loading always passes local_files_only=True, so a missing model is a FileNotFoundError
that names the folder, not a network timeout.
"""
import os

ENV = "ATTNLAB_MODELS_DIR"


def models_dir():
    """The models folder: $ATTNLAB_MODELS_DIR, else `models/` next to the attnlab package.

    Returns:
        Absolute path (it may not exist).

    Example:
        >>> models_dir()
        '/workspace/models'
    """
    folder = os.environ.get(ENV)
    if not folder:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        folder = os.path.join(os.path.dirname(package), "models")
    return os.path.abspath(folder)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("loading pretrained models needs the `transformers` package "
                          "(installed in the workbench image; elsewhere: pip install "
                          "transformers==4.46.3)") from None
    return transformers


def _hf_cache(folder):
    """The hub cache that belongs to `folder`: $HF_HOME/hub when set, else folder's."""
    home = os.environ.get("HF_HOME") or os.path.join(folder, "huggingface")
    return os.path.join(home, "hub")


def find_pretrained(name, folder=None):
    """Where the weights of `name` are, or None when they are not in the models folder.

    Args:
        name: a folder name under the models folder ("bert-base-uncased") or a hub id
            ("google-bert/bert-base-uncased") present in the Hugging Face cache.
        folder: the models folder (default: `models_dir()`).

    Returns:
        The model's folder (a save_pretrained folder or its snapshot in the cache), or None.

    Example:
        >>> find_pretrained("bert-base-uncased") is None   # nothing mounted
        True
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a model name such as 'bert-base-uncased', got %r"
                         % (name,))
    folder = os.path.abspath(folder or models_dir())
    local = os.path.join(folder, name)
    if os.path.isfile(os.path.join(local, "config.json")):
        return local
    repo = os.path.join(_hf_cache(folder), "models--" + name.replace("/", "--"))
    snapshots = os.path.join(repo, "snapshots")
    ref = os.path.join(repo, "refs", "main")
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            candidate = os.path.join(snapshots, f.read().strip())
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    if os.path.isdir(snapshots):
        for entry in sorted(os.listdir(snapshots)):
            candidate = os.path.join(snapshots, entry)
            if os.path.isfile(os.path.join(candidate, "config.json")):
                return candidate
    return None


def load_pretrained(name, model_class="TFAutoModel", folder=None, **kwargs):
    """Load a TF model and its tokenizer from the models folder, offline.

    Args:
        name: as for `find_pretrained`.
        model_class: a transformers TF class or its name ("TFAutoModel",
            "TFAutoModelForSeq2SeqLM", "TFBertModel", ...).
        folder: the models folder (default: `models_dir()`).
        **kwargs: passed to `from_pretrained` of the model.

    Returns:
        (model, tokenizer).

    Raises:
        FileNotFoundError: the weights are not in the folder (the message says where to put
            them).
        ImportError: transformers is not installed.

    Example:
        >>> model, tokenizer = load_pretrained("bert-base-uncased")
    """
    folder = os.path.abspath(folder or models_dir())
    path = find_pretrained(name, folder)
    if path is None:
        raise FileNotFoundError(
            "pretrained model %r is not in the models folder %s: put a save_pretrained folder "
            "at %s, or the Hugging Face cache under %s (see docs/pretrained.md); the "
            "workbench never downloads weights"
            % (name, folder, os.path.join(folder, name), _hf_cache(folder)))
    transformers = _transformers()
    if isinstance(model_class, str):
        if not hasattr(transformers, model_class):
            raise ValueError("transformers has no class %r (expected e.g. 'TFAutoModel')"
                             % model_class)
        model_class = getattr(transformers, model_class)
    kwargs.setdefault("local_files_only", True)
    model = model_class.from_pretrained(path, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer

"""Decoding with the KV cache against recomputing the decoder over the prefix at every step.

TransformerSeq2Seq (untrained weights: speed does not depend on them) generates 128 tokens
greedily for a batch of sources, once feeding one token per step with the self-attention
KV cache, once rerunning the decoder on the whole (B, 128) prefix buffer per step. The end
token is disabled so both generate every token. Reported: tokens/s and the ratio.

Usage:
    python benchmarks/decoding_cache.py           # d_model 128, 2 layers, B=8, 128 tokens
    python benchmarks/decoding_cache.py --smoke   # tiny sizes, proves it still runs
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402  (sets up sys.path and the TF log level)


def main(argv=None):
    args = _harness.parse_args(__doc__.splitlines()[0], None, argv)
    tf = _harness.configure_threads(args.threads)
    _harness.print_header("decoding_cache", args)
    import numpy as np

    from attnlab.decoding import greedy_decode
    from attnlab.models.transformer import TransformerSeq2Seq

    sizes = dict(batch=2, tokens=8, d_model=16, source=8) if args.smoke else \
        dict(batch=8, tokens=128, d_model=128, source=32)
    repeats = 1 if args.smoke else max(1, args.repeats // 5)
    tf.keras.utils.set_random_seed(0)
    model = TransformerSeq2Seq(32, 32, d_model=sizes["d_model"], num_heads=4,
                               ff_dim=4 * sizes["d_model"], num_layers=2,
                               max_length=sizes["tokens"])
    source = np.random.default_rng(0).integers(4, 32, size=(sizes["batch"], sizes["source"]))
    results = {}
    for use_cache in (True, False):
        def run(use_cache=use_cache):
            return greedy_decode(model, source, sizes["tokens"], eos_id=-1,
                                 use_cache=use_cache)
        run()  # tracing
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        results[use_cache] = sizes["batch"] * sizes["tokens"] / float(np.median(times))
    same = np.array_equal(greedy_decode(model, source, sizes["tokens"], eos_id=-1),
                          greedy_decode(model, source, sizes["tokens"], eos_id=-1,
                                        use_cache=False))
    ratio = results[True] / results[False]
    _harness.table("Greedy decoding of %d tokens, batch %d (TransformerSeq2Seq d_model=%d, "
                   "2 layers)" % (sizes["tokens"], sizes["batch"], sizes["d_model"]),
                   ["decoder", "tokens/s", "ratio to recompute", "same tokens"],
                   [("KV cache", "%.0f" % results[True], "%.2f" % ratio, str(same)),
                    ("recompute prefix", "%.0f" % results[False], "1.00", "")])
    _harness.summary("KV cache decoding speed-up (128 tokens)", "%.2fx" % ratio, "> 1x",
                     ratio > 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

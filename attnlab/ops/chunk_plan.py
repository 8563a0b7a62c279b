"""How chunked attention cuts queries and keys into blocks, and where the chunks live.

`ChunkPlan` holds the sizes (Python ints where the lengths are static, else scalar
tensors), the padding to whole chunks, and each block's keep mask; the functions below
slice, store and join chunks along axis -2 so that writing or re-reading one costs O(chunk).
"""
import tensorflow as tf

from attnlab.ops.shapes import static_or_dynamic_length


def _clip(chunk_size, length):
    """Chunk size clipped to the length (a Python int when the length is static)."""
    if isinstance(length, int):
        return min(chunk_size, length)
    return tf.minimum(chunk_size, length)


class ChunkPlan:
    """Chunks of (..., T, d) queries and (..., S, d) keys, and which keys each block sees.

    A block (query chunk i, key chunk j) sees a key when it is not padding, when the causal
    band allows it (key position <= query position + offset) and when the user's mask does;
    `keep` builds that mask per block, so no (T, S) tensor ever exists. With `causal`, key
    chunks entirely after a query chunk are skipped (`key_chunks_needed`,
    `first_query_chunk`).
    """

    def __init__(self, query, key, mask, causal, causal_offset, query_chunk_size,
                 key_chunk_size, bias=None):
        self.rank = query.shape.rank
        self.mask = mask
        self.bias = bias
        self.causal = causal
        self.t = static_or_dynamic_length(query, -2)
        self.s = static_or_dynamic_length(key, -2)
        self.q_chunk = _clip(query_chunk_size, self.t)
        self.k_chunk = _clip(key_chunk_size, self.s)
        self.num_q = (self.t + self.q_chunk - 1) // self.q_chunk
        self.num_k = (self.s + self.k_chunk - 1) // self.k_chunk
        self.pad_t = self.num_q * self.q_chunk - self.t
        self.pad_s = self.num_k * self.k_chunk - self.s
        # Padded keys must be hidden unless S is statically a multiple of the chunk.
        self.hide_padded_keys = not (isinstance(self.pad_s, int) and self.pad_s == 0)
        self.offset = None
        if causal:
            offset = self.s - self.t if causal_offset is None else causal_offset
            self.offset = tf.cast(offset, tf.int32)

    def pad_queries(self, x):
        return pad_length(x, self.pad_t, self.rank)

    def pad_keys(self, x):
        return pad_length(x, self.pad_s, self.rank)

    def keep(self, q_index, k_index):
        """bool mask of rank `rank` for one (query chunk, key chunk) block, or None."""
        q_pos = q_index * self.q_chunk + tf.range(self.q_chunk)
        k_pos = k_index * self.k_chunk + tf.range(self.k_chunk)
        lead = [1] * (self.rank - 2)
        parts = []
        if self.hide_padded_keys:
            parts.append(tf.reshape(k_pos < self.s, lead + [1, -1]))
        if self.causal:
            visible = k_pos[tf.newaxis, :] <= q_pos[:, tf.newaxis] + self.offset
            parts.append(tf.reshape(visible, lead + [self.q_chunk, self.k_chunk]))
        if self.mask is not None:
            parts.append(_slice_axis(_slice_axis(self.mask, q_pos, self.rank - 2), k_pos,
                                     self.rank - 1))
        keep = None
        for part in parts:
            keep = part if keep is None else tf.logical_and(keep, part)
        return keep

    def bias_block(self, q_index, k_index):
        """The score bias of one block (axes of size 1 stay unexpanded), or None."""
        if self.bias is None:
            return None
        q_pos = q_index * self.q_chunk + tf.range(self.q_chunk)
        k_pos = k_index * self.k_chunk + tf.range(self.k_chunk)
        return _slice_axis(_slice_axis(self.bias, q_pos, self.rank - 2), k_pos, self.rank - 1)

    def key_chunks_needed(self, q_index):
        """Key chunks that any query of this chunk can see; causal skips those after it."""
        if not self.causal:
            return self.num_k
        last_query = tf.minimum((q_index + 1) * self.q_chunk, self.t) - 1
        needed = (last_query + self.offset) // self.k_chunk + 1
        return tf.clip_by_value(needed, 0, self.num_k)

    def first_query_chunk(self, k_index):
        """The first query chunk that sees any key of this chunk (causal), else 0."""
        if not self.causal:
            return 0
        return tf.clip_by_value((k_index * self.k_chunk - self.offset) // self.q_chunk, 0,
                                self.num_q)


def _slice_axis(mask, positions, axis):
    """Rows (or columns) `positions` of a mask axis that is not broadcast (size != 1).

    Positions past the end (padding) are clamped to the last index; they belong to padded
    queries, whose output is dropped, or padded keys, which the key-validity mask hides.
    """
    if mask.shape[axis] == 1:
        return mask
    last = tf.shape(mask)[axis] - 1
    return tf.gather(mask, tf.minimum(positions, last), axis=axis)


def pad_length(x, amount, rank):
    """Zero-pad axis -2 (the sequence) at the end by `amount`; no copy when it is 0."""
    if isinstance(amount, int) and amount == 0:
        return x
    return tf.pad(x, [[0, 0]] * (rank - 2) + [[0, amount], [0, 0]])


def chunk(x, index, size):
    """Rows [index * size, (index + 1) * size) of axis -2, with as static a shape as `x`."""
    rank, shape = x.shape.rank, tf.shape(x)
    # tf.slice with explicit sizes (not x[..., a:b, :]) so that XLA sees a static size.
    begin = tf.concat([tf.zeros([rank - 2], tf.int32), [index * size, 0]], axis=0)
    part = tf.slice(x, begin, tf.concat([shape[:-2], [size, shape[-1]]], axis=0))
    part.set_shape(x.shape[:-2].concatenate([size if isinstance(size, int) else None,
                                             x.shape[-1]]))
    return part


def with_column(x, column):
    """(..., n, d) -> (..., n, d + 1): `x` with `column` (..., n, 1) appended."""
    return tf.concat([x, tf.cast(column, x.dtype)], axis=-1)


def with_ones_column(x):
    """[x, 1]: a column of ones appended, so that a matmul with it also sums over rows."""
    return with_column(x, tf.ones_like(x[..., :1]))


def chunk_array(num_chunks, dtype, fill=None):
    """A TensorArray of `num_chunks` chunks; with `fill`, every element starts as `fill`.

    Writing a chunk is O(chunk): the array holds references, where a tensor_scatter_nd
    write into a (..., n, c, d) buffer copies the whole buffer on every call.
    """
    chunks = tf.TensorArray(dtype, size=num_chunks, clear_after_read=False,
                            element_shape=None if fill is None else fill.shape)
    if fill is None:
        return chunks
    # Every element refers to the same `fill` tensor: updates replace it, never write to it.
    return tf.while_loop(lambda index, _: index < num_chunks,
                         lambda index, chunks: (index + 1, chunks.write(index, fill)),
                         (0, chunks))[1]


def split(x, num_chunks, chunk_size, ones_column=False):
    """TensorArray of the `num_chunks` chunks of `x` along axis -2, each sliced once; with
    `ones_column`, each chunk is [chunk, 1] (a column of ones appended).

    A loop reading the same chunk many times reads it from here without a copy, where a
    slice of `x` copies it every time (the chunks are one copy of `x` in all).
    """
    depth = x.shape[-1]
    if ones_column and depth is not None:
        depth += 1
    shape = x.shape[:-2].concatenate([chunk_size if isinstance(chunk_size, int) else None,
                                      depth])

    def one_chunk(index):
        part = chunk(x, index, chunk_size)
        return with_ones_column(part) if ones_column else part

    chunks = tf.TensorArray(x.dtype, size=num_chunks, clear_after_read=False,
                            element_shape=shape)
    return tf.while_loop(
        lambda index, _: index < num_chunks,
        lambda index, chunks: (index + 1, chunks.write(index, one_chunk(index))),
        (0, chunks))[1]


def sequence(chunks, num_chunks, length):
    """The array's (..., c, d) chunks joined along axis -2 into (..., length, d).

    A known number of chunks is joined by one concat (a single chunk with no copy); an
    unknown one is stacked to (n, ..., c, d) and moved into place by a transpose.
    """
    if isinstance(num_chunks, int):
        parts = [chunks.read(index) for index in range(num_chunks)]
        x = parts[0] if num_chunks == 1 else tf.concat(parts, axis=-2)
    else:
        stacked = chunks.stack()
        rank = stacked.shape.rank
        x = tf.transpose(stacked, list(range(1, rank - 2)) + [0, rank - 2, rank - 1])
        shape = tf.shape(x)
        x = tf.reshape(x, tf.concat([shape[:-3], [shape[-3] * shape[-2], shape[-1]]], 0))
    if isinstance(length, int) and x.shape[-2] == length:
        return x
    return x[..., :length, :]


def transposed_zeros(x, dtype):
    """Zeros of the shape of x^T, (..., d, n) for x of shape (..., n, d)."""
    shape = tf.shape(x)
    zeros = tf.zeros(tf.concat([shape[:-2], shape[-1:], shape[-2:-1]], axis=0), dtype)
    zeros.set_shape(x.shape[:-2].concatenate([x.shape[-1], x.shape[-2]]))
    return zeros

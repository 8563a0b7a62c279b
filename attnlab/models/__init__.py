"""Small reference models assembled from attnlab layers; each can return its attention."""
from attnlab.models.classifier import AttentionClassifier
from attnlab.models.hierarchical import HierarchicalAttentionNetwork
from attnlab.models.rnn_seq2seq import RNNSeq2Seq
from attnlab.models.transformer import TransformerSeq2Seq

__all__ = ["AttentionClassifier", "HierarchicalAttentionNetwork", "RNNSeq2Seq",
           "TransformerSeq2Seq"]

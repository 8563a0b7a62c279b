"""Small reference models assembled from attnlab layers; each can return its attention."""
from attnlab.models.classifier import AttentionClassifier
from attnlab.models.hierarchical import HierarchicalAttentionNetwork
from attnlab.models.prior_guided import PriorGuidedClassifier, term_weight_prior
from attnlab.models.rnn_seq2seq import RNNSeq2Seq
from attnlab.models.transformer import TransformerSeq2Seq

__all__ = ["AttentionClassifier", "HierarchicalAttentionNetwork", "PriorGuidedClassifier",
           "RNNSeq2Seq", "TransformerSeq2Seq", "term_weight_prior"]

"""Tiny text-classification models built locally (no downloads), for the moderation classifier.

Their scores are set, not learnt: the classifier head's weights are zero and its bias holds the
logits, so every text gets exactly the scores a test asks for.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CORPUS


def build_tiny_classifier(folder: Path, logits: dict[str, float], multi_label: bool = False,
                          max_length: int = 32) -> Path:
    """A small BERT classifier whose labels are `logits`' keys, scoring every text by `logits`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for line in CORPUS for w in line.lower().split()})
    vocab = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=max_length)
    labels = list(logits)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=2 * max_length, pad_token_id=vocab["[PAD]"],
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([logits[label] for label in labels]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

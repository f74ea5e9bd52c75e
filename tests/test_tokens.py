import pytest
import torch

from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.errors import PromptError
from rrnet.tokens import tokenize_prompt, word_embedding, word_positions, word_token_ids


@pytest.fixture(scope="module")
def sd2_tok():
    return clip_tokenizer(pad_token="!")


@pytest.fixture(scope="module")
def sd1_tok():
    return clip_tokenizer(pad_token="<|endoftext|>")


def test_tokenizer_gives_stable_diffusion_ids(sd2_tok):
    assert sd2_tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_eot_index_with_sd2_bang_padding(sd2_tok):
    tokens = tokenize_prompt(sd2_tok, "there is a panda below desk")
    assert len(tokens.input_ids) == 77
    assert tokens.eot_index == 7  # <start> there is a panda below desk <end>
    assert tokens.input_ids[7] == sd2_tok.eos_token_id
    assert set(tokens.input_ids[8:]) == {sd2_tok.pad_token_id} and sd2_tok.pad_token_id == 0


def test_eot_index_with_sd1_eot_padding(sd1_tok):
    tokens = tokenize_prompt(sd1_tok, "a car beneath bridge")
    # the pad token is the EOT token itself: the first one is the real end of text
    assert tokens.eot_index == 5
    assert set(tokens.input_ids[5:]) == {sd1_tok.eos_token_id}


def test_multi_token_word_positions_and_mean_embedding(sd2_tok):
    ids = word_token_ids(sd2_tok, "teddybear")
    assert len(ids) >= 2
    tokens = tokenize_prompt(sd2_tok, "a teddybear below a table")
    pos = word_positions(sd2_tok, tokens, "teddybear")
    assert [tokens.input_ids[p] for p in pos] == ids

    class Encoder:
        def __init__(self):
            self.table = torch.nn.Embedding(len(sd2_tok), 4)

        def get_input_embeddings(self):
            return self.table

    enc = Encoder()
    expected = enc.table.weight[torch.tensor(ids)].mean(0)
    assert torch.allclose(word_embedding(enc, sd2_tok, tokens, "teddybear"), expected)
    assert not torch.allclose(expected, enc.table.weight[ids[0]])  # not only the first sub-token


def test_word_not_in_prompt_is_an_error(sd2_tok):
    tokens = tokenize_prompt(sd2_tok, "a book is placed on a bowl")
    with pytest.raises(PromptError, match="'cup' is not in the prompt"):
        word_positions(sd2_tok, tokens, "cup")


def test_overlong_prompt_is_an_error(sd2_tok):
    with pytest.raises(PromptError, match="at most 77"):
        tokenize_prompt(sd2_tok, " ".join(["word"] * 80))

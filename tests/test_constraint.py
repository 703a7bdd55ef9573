"""The permutation state machine, on the two real tokenizers that matter.

- Llama-3 (the DeAR vocabulary, from the vocab-only GGUF fixture): digits merge
  into tokens of up to three.
- SmolLM2 (the stand-in model's GGUF): every digit is its own token.

Property tests check the machine against independent oracles: a regex for
complete answers, and brute-force enumeration of permutations for prefixes.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local.backends.llama import LlamaCppBackend
from dear_local.contract.constraint import (
    ALPHABET,
    PermutationConstraint,
    TokenIndex,
    canonical_answer,
    is_canonical_answer,
)

TOKENIZERS = ["llama3", "smollm2"]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def vocabs(llama3_vocab_gguf, standin_gguf):
    """Each tokenizer as (backend, TokenIndex); vocab-only, no weights loaded."""
    out = {}
    for name, path in (("llama3", llama3_vocab_gguf), ("smollm2", standin_gguf)):
        backend = LlamaCppBackend(path, vocab_only=True)
        out[name] = (backend, TokenIndex.from_backend(backend))
    yield out
    for backend, _ in out.values():
        backend.close()


def walk(constraint, tokens):
    """Feed tokens one by one; return the states after each (None once rejected)."""
    state, states = constraint.initial, []
    for t in tokens:
        state = constraint.advance(state, t) if state is not None else None
        states.append(state)
    return states


def tokenize(backend, text):
    return backend.tokenize(text, add_bos=False)


def spell(index, tokens):
    return b"".join(index.pieces[t] for t in tokens).decode()


# -- the index ------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKENIZERS)
def test_index_keeps_exactly_the_tokens_made_of_answer_characters(vocabs, name):
    backend, index = vocabs[name]
    pieces = backend.vocab_pieces()
    expected = {t for t, p in enumerate(pieces) if p and set(p) <= ALPHABET}
    assert set(index.pieces) == expected
    # Small next to the vocabulary, and it holds every token of a real answer.
    assert len(index) < len(pieces) / 20
    assert set(tokenize(backend, "[12] > [3] > [100] > [0]")) <= set(index.pieces)


def test_the_two_tokenizers_cut_digits_differently(vocabs):
    llama3, _ = vocabs["llama3"]
    smol, _ = vocabs["smollm2"]
    assert len(tokenize(llama3, "123")) == 1
    assert len(tokenize(smol, "123")) == 3


# -- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(data=st.data(), n=st.integers(1, 100), id_base=st.sampled_from([0, 1]))
def test_every_valid_permutation_is_accepted_and_completes(vocabs, name, data, n, id_base):
    backend, index = vocabs[name]
    perm = data.draw(st.permutations(range(id_base, id_base + n)))
    text = canonical_answer(perm)
    constraint = PermutationConstraint(index, n, id_base)
    states = walk(constraint, tokenize(backend, text))
    assert all(s is not None for s in states)
    assert constraint.is_done(states[-1])
    assert not any(constraint.is_done(s) for s in states[:-1])


def _answer_edits():
    """A valid answer for a few ids, then random character edits (often none)."""
    chars = st.sampled_from(list("[]> 0123456789") + ["x", "\n", ",", "]>", " [", "10"])
    edit = st.tuples(st.sampled_from(["insert", "delete", "replace", "cut"]), st.integers(0, 60), chars)
    return st.tuples(st.integers(1, 6), st.sampled_from([0, 1]), st.randoms(use_true_random=False),
                     st.lists(edit, max_size=3))


def _all_answers(n, id_base):
    return [canonical_answer(p) for p in itertools.permutations(range(id_base, id_base + n))]


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(case=_answer_edits())
def test_accepts_exactly_the_prefixes_of_valid_answers(vocabs, name, case):
    """Token by token, the machine is alive iff the text so far starts some valid answer,
    and complete iff the text is a valid answer (checked against brute force)."""
    backend, index = vocabs[name]
    n, id_base, rnd, edits = case
    answers = _all_answers(n, id_base)
    text = rnd.choice(answers)
    for kind, at, ch in edits:
        at = min(at, len(text))
        if kind == "insert":
            text = text[:at] + ch + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        elif kind == "replace":
            text = text[:at] + ch + text[at + 1 :]
        else:
            text = text[:at]
    if not text:
        return
    constraint = PermutationConstraint(index, n, id_base)
    tokens = tokenize(backend, text)
    states = walk(constraint, tokens)
    so_far = ""
    for tok, state in zip(tokens, states):
        so_far += backend.token_bytes(tok).decode("utf-8", "replace")
        alive = any(a.startswith(so_far) for a in answers)
        assert (state is not None) == alive, (text, so_far)
    final = states[-1]
    assert (final is not None and constraint.is_done(final)) == is_canonical_answer(text, n, id_base)
    assert is_canonical_answer(text, n, id_base) == (text in answers)


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(n=st.integers(1, 100), id_base=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_any_sequence_of_allowed_tokens_completes_a_valid_answer(vocabs, name, n, id_base, seed):
    """No dead ends: picking any allowed token, every time, ends in a valid answer."""
    _, index = vocabs[name]
    rnd = random.Random(seed)
    constraint = PermutationConstraint(index, n, id_base)
    state, tokens = constraint.initial, []
    longest = len(canonical_answer(range(id_base, id_base + n)))  # every token has >= 1 character
    while not constraint.is_done(state):
        options = constraint.allowed(state)
        assert options, spell(index, tokens)
        step = rnd.choice(options)
        assert constraint.advance(state, step.token) == step.state
        tokens.append(step.token)
        state = step.state
        assert len(tokens) <= longest
    assert is_canonical_answer(spell(index, tokens), n, id_base)


@pytest.mark.parametrize("name", TOKENIZERS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 30), id_base=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_allowed_tokens_match_a_scan_of_the_whole_vocabulary(vocabs, name, n, id_base, seed):
    backend, index = vocabs[name]
    rnd = random.Random(seed)
    constraint = PermutationConstraint(index, n, id_base)
    perm = list(range(id_base, id_base + n))
    rnd.shuffle(perm)
    text = canonical_answer(perm)
    prefix = text[: rnd.randrange(len(text))]
    state = constraint.step_text(constraint.initial, prefix)
    assert state is not None
    full = PermutationConstraint(TokenIndex(backend.vocab_pieces()), n, id_base)
    scanned = {
        t
        for t, piece in enumerate(backend.vocab_pieces())
        if piece and full.step_text(state, piece) is not None
    }
    assert {s.token for s in constraint.allowed(state)} == scanned


@pytest.mark.parametrize("name", TOKENIZERS)
@PROPERTY
@given(n=st.integers(1, 6), id_base=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_forced_text_starts_every_valid_completion_and_tokenizes_admissibly(vocabs, name, n, id_base, seed):
    backend, index = vocabs[name]
    rnd = random.Random(seed)
    answers = _all_answers(n, id_base)
    text = rnd.choice(answers)
    prefix = text[: rnd.randrange(len(text))]
    constraint = PermutationConstraint(index, n, id_base)
    state = constraint.step_text(constraint.initial, prefix)
    forced = constraint.forced_text(state)
    assert all(a.startswith(prefix + forced) for a in answers if a.startswith(prefix))
    after = walk_from(constraint, state, tokenize(backend, forced)) if forced else state
    assert after == constraint.step_text(state, forced)


def walk_from(constraint, state, tokens):
    for t in tokens:
        state = constraint.advance(state, t)
        assert state is not None
    return state


# -- jump-forward cases ------------------------------------------------------------------------


def test_forced_text_covers_separators_and_the_last_id(vocabs):
    _, index = vocabs["smollm2"]
    c = PermutationConstraint(index, 20, 0)
    assert c.forced_text(c.initial) == "["
    assert c.forced_text(c.step_text(c.initial, "[5")) == "] > ["
    assert c.forced_text(c.step_text(c.initial, "[1")) == ""  # [1] or [10]..[19]
    assert c.forced_text(c.step_text(c.initial, "[")) == ""
    last = canonical_answer(range(19)) + " > ["
    assert c.forced_text(c.step_text(c.initial, last)) == "19]"
    one = PermutationConstraint(index, 1, 1)
    assert one.forced_text(one.initial) == "[1]"


def test_used_ids_and_tokens_outside_the_grammar_are_refused(vocabs):
    backend, index = vocabs["llama3"]
    c = PermutationConstraint(index, 20, 1)
    state = c.step_text(c.initial, "[3] > [")
    allowed = {spell(index, [s.token]) for s in c.allowed(state)}
    assert "3" not in allowed and "0" not in allowed and "21" not in allowed
    assert {"1", "2", "4", "10", "20"} <= allowed
    assert c.step_text(c.initial, "[01]") is None  # no leading zeros
    eot = tokenize(backend, "<|eot_id|>")[0]
    assert c.advance(c.initial, eot) is None


def test_the_transformers_logits_processor_masks_generate_to_a_permutation(vocabs):
    torch = pytest.importorskip("torch")
    from dear_local_convert.transformers_backend.logits_processor import permutation_logits_processor

    backend, index = vocabs["llama3"]
    eos = 128009
    n = 12
    proc = permutation_logits_processor(backend.vocab_pieces(), n, 1, eos_token_id=eos)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.tensor([[128000, 791, 3363], [128000, 791, 3363]])
    ids = prompt
    for _ in range(200):
        scores = torch.randn(ids.shape[0], len(backend.vocab_pieces()), generator=gen)
        nxt = proc(ids, scores).argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if (nxt == eos).all():
            break
    for row in ids[:, prompt.shape[1] :].tolist():
        assert eos in row and set(row[row.index(eos) :]) == {eos}  # only eos once complete
        assert is_canonical_answer(spell(index, row[: row.index(eos)]), n, 1)


def test_hf_byte_table_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from dear_local_convert.transformers_backend.token_bytes import _byte_decoder

    assert _byte_decoder() == {ch: b for b, ch in bytes_to_unicode().items()}

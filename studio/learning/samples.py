"""Drafts written during a run: the judge's picks to train on, and the gate's samples.

The gate's prompts are the newest held-out drafts' (what writers asked for lately, which no
version trained on), each with its own sampler settings. Both versions write the same number of
drafts of each prompt, batched, from the same seed; the first of each prompt is shown in the
Training tab as a before/after.

The judge's picks: before training, the serving version writes more drafts of the training
prompts, and the judge labels its favourites liked and its least favourites disliked. A few
ratings teach the judge a trait (one word shared by three liked drafts is enough), but teach the
model little; its own drafts that show the trait, in its own fluent style, teach it much more.
This is best-of-n with a reward model learned from the ratings, as in RLHF, kept honest by the
gate: the judge must first rank held-out ratings as the writers did.
"""

from __future__ import annotations

from typing import Any, Callable

from storage.models import Draft
from studio.learning.dataset import Example
from studio.learning.likelihood import perplexity, score
from studio.serving.sampling import MAX_SEED, SamplerSettings

MAX_PROMPTS = 4
PICK_SEED_OFFSET = 7_919  # the judge's picks use other seeds than the rated drafts they share prompts with
LOOK_SEED_OFFSET = 104_729  # each further look of the gate writes from other seeds than the looks before


def reseeded(requests: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """The same requests, each from its seed plus offset."""
    return [{**r, "sampler": {**r["sampler"], "seed": (r["sampler"]["seed"] + offset) % (MAX_SEED + 1)}}
            for r in requests]


def sample_requests(session, draft_ids: list[int], limit: int = MAX_PROMPTS) -> list[dict[str, Any]]:
    """The newest of these drafts with distinct prompts, as what to write again: prompt, exact model
    input, sampler settings and seed. Samples get the writer's own token limit: cut shorter, every
    sample of a prompt whose drafts end at 300 tokens would read as cut, and the judge, which learned
    from the writers' drafts whether an ending is liked, would favour a version that ends sooner."""
    requests, seen = [], set()
    for draft_id in sorted(draft_ids, reverse=True):
        draft = session.get(Draft, draft_id)
        if draft is None or draft.model_input in seen:
            continue
        seen.add(draft.model_input)
        known = {k: v for k, v in (draft.settings or {}).items() if k in SamplerSettings.__dataclass_fields__}
        settings = SamplerSettings().updated({**known, "seed": draft.seed})
        requests.append({"draft_id": draft.id, "template_id": draft.template_id, "prompt": draft.prompt,
                         "model_input": draft.model_input, "sampler": settings.to_dict()})
        if len(requests) == limit:
            break
    return requests


def write_drafts(model, tokenizer, requests: list[dict[str, Any]], count: int, *,
                 chat: bool, share_prompts: bool = True) -> list[list[tuple[str, bool]]]:
    """count drafts in all, spread over the requests, each prompt's batch from its draft's seed: one
    list per request of each text with whether it ended by itself (end-of-text) rather than at the
    token limit. A chat template's text already holds its special tokens.

    All prompts' drafts are decoded together in the serving path's batch engine: one batch of count
    rows, each with its own sampler settings and seed (the request's seed plus its row), and a draft
    that ends leaves the batch: fewer, larger passes than a generate() call per prompt, which is what
    a CPU runs fastest. Each prompt is run once for all its drafts (share_prompts=False: once per draft,
    as before; the sampling benchmark compares). A model the engine cannot batch writes each prompt's drafts with generate(),
    from the request's seed."""
    from studio.serving.batching import batching_obstacle

    counts = [count // len(requests) + (index < count % len(requests)) for index in range(len(requests))]
    model.eval()  # a candidate fresh from training still has its LoRA dropout on
    network = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel: its LoRA stays on
    if batching_obstacle(network) is None:
        return _write_batched(network, tokenizer, requests, counts, chat=chat, share_prompts=share_prompts)
    return [_write_one_prompt(model, tokenizer, request, n, chat=chat) for request, n in zip(requests, counts)]


def _write_batched(model, tokenizer, requests: list[dict[str, Any]], counts: list[int], *,
                   chat: bool, share_prompts: bool) -> list[list[tuple[str, bool]]]:
    from studio.serving.batch_rows import Collected, Request
    from studio.serving.batching import BatchEngine

    device = next(model.parameters()).device
    engine = BatchEngine(model, max_batch=max(sum(counts), 1), share_prompts=share_prompts)
    ends = engine.eos | ({tokenizer.eos_token_id} - {None})  # as generate() stops: the config's and the tokenizer's
    rows: list[list[tuple[Request, Collected]]] = []
    try:
        for request, n in zip(requests, counts):
            settings = SamplerSettings(**request["sampler"])
            ids = tokenizer(request["model_input"], return_tensors="pt", add_special_tokens=not chat)["input_ids"]
            group = []
            for row in range(n):
                collected = Collected()
                seed = (settings.seed + row) % (MAX_SEED + 1)
                group.append((Request(ids.to(device), settings.updated({"seed": seed}), collected, collected, ends),
                              collected))
            rows.append(group)
        engine.submit(*(request for group in rows for request, _ in group))  # one prefill, each prompt once
        for group in rows:
            for request, _ in group:
                request.join()
                if request.error is not None:
                    raise request.error
    finally:
        engine.close()
    return [[(tokenizer.decode(collected.ids, skip_special_tokens=True).strip(),
              collected.ended) for _, collected in group] for group in rows]


def _write_one_prompt(model, tokenizer, request: dict[str, Any], n: int, *, chat: bool) -> list[tuple[str, bool]]:
    import torch
    from transformers import set_seed

    if n == 0:
        return []
    device = next(model.parameters()).device
    settings = SamplerSettings(**request["sampler"])
    inputs = tokenizer([request["model_input"]] * n, return_tensors="pt", add_special_tokens=not chat).to(device)
    set_seed(settings.seed)
    with torch.inference_mode():
        output = model.generate(**inputs, **settings.generate_kwargs(),
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new = output[:, inputs["input_ids"].shape[1]:]
    configured = getattr(model.generation_config, "eos_token_id", None)
    ends = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
    return [(tokenizer.decode(row, skip_special_tokens=True).strip(), any(int(t) in ends for t in row)) for row in new]


def fluency(model, tokenizer, requests: list[dict[str, Any]], texts: list[list[str]], max_length: int) -> float:
    """The model's perplexity of drafts written for these requests (per token, over all of them)."""
    written = [(request, text) for request, group in zip(requests, texts) for text in group]
    examples = [Example(draft_id=index, context=request["model_input"], prompt=request["prompt"], completion=text,
                        stars=0, user="", template_id=request["template_id"])
                for index, (request, text) in enumerate(written)]
    return perplexity(score(model, tokenizer, examples, max_length), list(range(len(examples))))


def judge_picks(model, tokenizer, requests: list[dict[str, Any]], count: int, judge_score, *,
                chat: bool, allowed: Callable[[str, str], bool] | None = None, liked_wanted: int = 0,
                most: int = 0) -> list[Example]:
    """count drafts of these prompts by this model; of each prompt's, those the judge expects writers
    to like (log-odds above 0) as liked (5 stars) and as many of those it expects them to dislike,
    its least favourites first, as disliked (1 star). Drafts it is unsure of (0) teach nothing, and
    neither do those allowed(text, prompt) refuses (the content filter: they train as writers'
    flagged drafts do, not at all). A draft cut at the token limit is marked as not ended, so it is
    never taught as a liked ending (finetune.kto_rows).

    While fewer than liked_wanted are liked, the model writes count more from new seeds, up to most
    in all: a taste the model shows in one draft of ten gives a handful of picks from count drafts,
    too few to learn from, where a common one needs no more."""
    judged: list[dict[str, tuple[bool, float]]] = [{} for _ in requests]  # each prompt's texts: ended, score
    total, most = 0, max(count, most)
    while total < most:
        batch = min(count, most - total)
        shifted = reseeded(requests, PICK_SEED_OFFSET + total)  # each batch's rows from seeds no batch used
        for request, seen, drafts in zip(shifted, judged, write_drafts(model, tokenizer, shifted, batch, chat=chat)):
            new = [(t, e) for t, e in dict(drafts).items() if t and t not in seen  # a repeated draft would count twice
                   and (allowed is None or allowed(t, request["prompt"]))]
            seen.update({t: (e, value) for (t, e), value in zip(new, judge_score(new) if new else [])})
        total += batch
        if sum(value > 0 for seen in judged for _, value in seen.values()) >= liked_wanted:
            break
    picks: list[Example] = []
    for request, seen in zip(requests, judged):
        ranked = sorted(seen, key=lambda text: seen[text][1], reverse=True)
        liked = [text for text in ranked if seen[text][1] > 0]
        disliked = [text for text in reversed(ranked) if seen[text][1] < 0][:len(liked)]
        for stars, group in ((5, liked[:len(disliked)]), (1, disliked)):
            picks += [Example(draft_id=-(len(picks) + 1), context=request["model_input"], prompt=request["prompt"],
                              completion=text, stars=stars, user="", template_id=request["template_id"],
                              ended=seen[text][0]) for text in group]
    return picks

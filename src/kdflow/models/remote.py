"""``kind: llm`` with ``base_url``: an LLM behind an OpenAI-compatible endpoint (vLLM, llama.cpp's server, TGI,
Ollama, the commercial APIs) as a zero/few-shot classifier, through the official ``openai`` client.

Each example is one chat request (:meth:`kdflow.models.llm.Prompter.messages`). Where the endpoint returns
log-probabilities, the label scores come from the first answer token's top candidates: a candidate that starts
a label's verbalizer (case and spaces aside) gives that label its probability, shared equally when it starts
several; the rest is the mass outside the labels. Where it returns none, ``samples`` answers are drawn and each
is read as a label (the verbalizer, or an answer that starts with it); the scores are the labels' shares.

An answer that is no label (an empty or truncated response, a refusal, other words) is *unusable*: counted by
kind, re-asked (``unusable: retry``, up to ``max_retries`` times) and then dropped -- its target is NaN, which
the distiller skips and the teacher's test score counts as wrong -- never mapped to a class.

Requests run ``concurrency`` at a time; 429, 5xx, timeouts, dropped connections and malformed bodies are
retried with exponential back-off (``retry_wait`` doubled per try, or the server's Retry-After). Every answer is
cached the moment it arrives (:mod:`kdflow.models.answers`); ``max_calls`` caps the requests of one command,
and stopping there (or at a dead server) keeps every answer paid for. The key is read from the environment
variable ``api_key_env`` and never written anywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
from torch import nn

from ..config import LLMSpec
from ..data.features import from_bytes
from ..errors import KdflowError, first_line
from .answers import AnswerCache, answer_key, preview

RETRY_CAP = 60.0  # seconds: the longest single back-off
UNUSABLE = ("empty", "truncated", "refusal", "no_label")


class Stopped(Exception):
    """Requests stop (retries exhausted, budget spent): (what happened, what a rerun does)."""


def normal(text: str) -> str:
    """An answer or verbalizer as compared: lower case, punctuation and spaces at the ends dropped."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", text.strip().lower())


def label_of(answer: str, verbalizers: list[str]) -> Optional[int]:
    """The label an answer names: its verbalizer exactly, else the longest verbalizer it starts with."""
    said = normal(answer)
    words = [normal(v) for v in verbalizers]
    if said in words:
        return words.index(said)
    starts = [(len(w), c) for c, w in enumerate(words) if w and said.startswith(w)]
    return max(starts)[1] if starts else None


def scores_from_logprobs(top: list[tuple[str, float]], verbalizers: list[str]) -> Optional[list[float]]:
    """Label probabilities from the first answer token's candidates ``(token, logprob)``; None if none starts
    a label."""
    words = [normal(v) for v in verbalizers]
    mass = [0.0] * len(words)
    for token, logprob in top:
        t = normal(token)
        hit = [c for c, w in enumerate(words) if t and w.startswith(t)]
        for c in hit:
            mass[c] += math.exp(logprob) / len(hit)
    return mass if sum(mass) > 0 else None


def scores_from_samples(answers: list[tuple[str, str]], verbalizers: list[str]) -> tuple[Optional[list[float]],
                                                                                        dict]:
    """Label shares among sampled ``(text, finish_reason)`` answers, and the unusable ones by kind."""
    counts, bad = [0] * len(verbalizers), {}
    for text, finish in answers:
        label = label_of(text or "", verbalizers)
        if label is not None:
            counts[label] += 1
            continue
        kind = "empty" if not (text or "").strip() else "truncated" if finish == "length" else \
            "refusal" if finish == "content_filter" else "no_label"
        bad[kind] = bad.get(kind, 0) + 1
    n = sum(counts)
    return ([k / n for k in counts] if n else None), bad


class Meter:
    """What the endpoint was paid: requests (calls), retries, tokens, seconds, money; thread-safe."""

    def __init__(self, spec: LLMSpec):
        self.spec, self.lock = spec, threading.Lock()
        self.calls = self.retries = self.prompt_tokens = self.completion_tokens = self.cached = 0
        self.seconds = 0.0
        self.unusable = {k: 0 for k in UNUSABLE}
        self.dropped = 0

    def paid(self, response, seconds: float) -> None:
        usage = getattr(response, "usage", None)
        with self.lock:
            self.calls += 1
            self.seconds += seconds
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)

    def money(self) -> Optional[float]:
        s = self.spec
        if s.price_prompt is None and s.price_completion is None:
            return None
        return round((self.prompt_tokens * (s.price_prompt or 0) + self.completion_tokens * (s.price_completion or 0))
                     / 1e6, 6)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "retries": self.retries, "cached": self.cached, "seconds": round(self.seconds, 2),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "money": self.money(), "unusable": dict(self.unusable), "dropped": self.dropped}


def api_key(spec: LLMSpec) -> str:
    """The key from the environment variable the config names (an endpoint without keys gets a placeholder)."""
    if not spec.api_key_env:
        return "none"
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise KdflowError(f"model.teacher.api_key_env names {spec.api_key_env}, which is not set; export "
                          f"{spec.api_key_env}=<your key> before running")
    return key


def retryable(err: Exception) -> bool:
    import openai
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError,
                            ValueError))


def wait_of(err: Exception, spec: LLMSpec, attempt: int) -> float:
    """The back-off before retry ``attempt`` (0-based): the server's Retry-After, else ``retry_wait · 2^attempt``."""
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        return min(float(headers.get("retry-after")), RETRY_CAP)
    except (TypeError, ValueError):
        return min(spec.retry_wait * 2 ** attempt, RETRY_CAP)


class RemoteLLM(nn.Module):
    """``forward(ids, text, text_pair=None)`` (byte tensors) -> ``.logits`` ``[B, C]`` (log of the label scores;
    NaN rows for dropped answers); each answer cached as it arrives."""

    def __init__(self, spec: LLMSpec, prompter, answers_dir: Optional[Path] = None):
        super().__init__()
        try:
            from openai import OpenAI
        except ImportError:
            raise KdflowError("An llm teacher behind an endpoint (model.teacher.base_url) talks through the openai "
                              "package, which is not installed; run: pip install 'kdflow[llm]'") from None
        self.spec, self.prompter = spec, prompter
        words = [normal(v) for v in prompter.verbalizers]
        if len(set(words)) < len(words) or not all(words):
            raise KdflowError("Two verbalizers read alike (or one is only punctuation) once case and punctuation are "
                              "dropped, so an answer could not tell them apart; give each label its own words")
        self.client = OpenAI(base_url=spec.base_url, api_key=api_key(spec), max_retries=0, timeout=spec.timeout)
        self.meter = Meter(spec)
        self.logprobs: Optional[bool] = None  # does the endpoint give log-probabilities? (learnt from its answers)
        self.answers = AnswerCache(Path(answers_dir) / f"remote-{answer_key(self.identity)}" if answers_dir else None)
        self.lock = threading.Lock()

    @property
    def identity(self) -> str:
        """What decides an answer: the endpoint, the model, the prompts' settings and the request's."""
        s, p = self.spec, self.prompter
        return repr((s.base_url, s.name, s.template, s.system, s.max_text_tokens, p.shots, p.verbalizers,
                     s.samples, s.top_logprobs, s.max_answer_tokens, s.unusable))

    def _request(self, messages: list[dict], logprobs: bool):
        """One request, retried on what may pass (429, 5xx, timeouts, broken connections and bodies)."""
        s = self.spec
        extra = {"logprobs": True, "top_logprobs": s.top_logprobs, "temperature": 0.0} if logprobs else \
            {"n": s.samples, "temperature": 1.0}
        for attempt in range(s.max_retries + 1):
            self._spend()
            began = time.perf_counter()
            try:
                response = self.client.chat.completions.create(model=s.name, messages=messages,
                                                               max_tokens=s.max_answer_tokens, **extra)
                if not getattr(response, "choices", None):
                    raise ValueError("a response without choices")
                self.meter.paid(response, time.perf_counter() - began)
                return response
            except Exception as err:
                if not retryable(err) or attempt == s.max_retries:
                    raise Stopped(f"The endpoint {s.base_url} failed ({type(err).__name__}: {first_line(err)}) "
                                  f"after {attempt + 1} tries", "so a rerun asks only the rest") from None
                with self.meter.lock:
                    self.meter.retries += 1
                time.sleep(wait_of(err, s, attempt))

    def _spend(self) -> None:
        with self.meter.lock:
            if self.spec.max_calls is not None and self.meter.calls + self.meter.retries >= self.spec.max_calls:
                raise Stopped(f"model.teacher.max_calls ({self.spec.max_calls}) is spent",
                              "so raising it and rerunning pays only for the rest")

    def _answer(self, messages: list[dict]) -> dict:
        """The label scores of one example: from log-probabilities where the endpoint gives them, else samples;
        an unusable answer re-asked by sampling (``unusable: retry``) or dropped."""
        if self.logprobs is not False:  # unknown or given: ask for them
            choice = self._request(messages, logprobs=True).choices[0]
            content = getattr(getattr(choice, "logprobs", None), "content", None)
            self.logprobs = bool(content and getattr(content[0], "top_logprobs", None))
            mass = scores_from_logprobs([(c.token, c.logprob) for c in content[0].top_logprobs],
                                        self.prompter.verbalizers) if self.logprobs else None
            if mass is not None:
                return {"scores": mass, "outside": max(0.0, 1.0 - sum(mass)), "via": "logprobs"}
        tries = 1 + (self.spec.max_retries if self.spec.unusable == "retry" else 0)
        found: dict = {}
        row = {"scores": None, "outside": None, "via": "dropped"}
        for _ in range(tries):
            sampled = self._request(messages, logprobs=False)
            shares, bad = scores_from_samples([(c.message.content, c.finish_reason) for c in sampled.choices],
                                              self.prompter.verbalizers)
            for k, v in bad.items():
                found[k] = found.get(k, 0) + v
            if shares is not None:
                row = {"scores": shares, "outside": None, "via": "samples"}
                break
        with self.meter.lock:
            for k, v in found.items():
                self.meter.unusable[k] += v
            self.meter.dropped += row["scores"] is None
        return {**row, "unusable": found}

    def _ask_all(self, todo: dict[str, list[dict]]) -> None:
        """Ask every ``key -> messages`` at ``concurrency`` at a time; each answer cached as it arrives. After a
        failure nothing new is sent, the requests under way are still received and cached, then it is raised."""
        failed: Optional[BaseException] = None
        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            futures = {pool.submit(self._answer, m): key for key, m in todo.items()}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    row = future.result()
                except BaseException as err:
                    if failed is None:
                        failed = err
                        for f in futures:
                            f.cancel()
                    continue
                with self.lock:
                    self.answers.add([(futures[future], row)])
        if isinstance(failed, Stopped):  # said once everything under way has arrived: how much is kept
            raise KdflowError(f"{failed.args[0]}; {len(self.answers)} answers are cached, {failed.args[1]}") from None
        if failed is not None:
            raise failed

    def _chats(self, texts: list[str], pairs: Optional[list[str]]) -> tuple[list[str], list[list[dict]]]:
        """(answer keys, chat messages) of examples."""
        chats = [self.prompter.messages(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]
        return [answer_key(json.dumps(m, sort_keys=True)) for m in chats], chats

    def forward(self, ids: torch.Tensor, text: torch.Tensor, text_pair: Optional[torch.Tensor] = None, **_):
        keys, chats = self._chats(from_bytes(text), from_bytes(text_pair) if text_pair is not None else None)
        todo = {k: m for k, m in zip(keys, chats) if k not in self.answers}
        self.meter.cached += len(keys) - len(todo)
        self._ask_all(todo)
        rows = [self.answers.get(k) for k in keys]
        logits = [[math.log(max(p, 1e-6)) for p in r["scores"]] if r["scores"] is not None
                  else [float("nan")] * len(self.prompter.verbalizers) for r in rows]
        return SimpleNamespace(logits=torch.tensor(logits, dtype=torch.float32, device=ids.device))

    def preview(self, splits: dict) -> tuple[str, str]:
        """(level, sentence): what a pass over ``splits`` would send, before sending it."""
        keys = {name: self._chats(split.inputs["text"], split.inputs.get("text_pair"))[0]
                for name, split in splits.items()}
        budget = f", and model.teacher.max_calls is {self.spec.max_calls}" if self.spec.max_calls else ""
        return "info", preview(keys, self.answers, f"The llm teacher at {self.spec.base_url}",
                               "at least {} requests") + budget

    def usage(self) -> dict:
        return self.meter.as_dict()


__all__ = ["RemoteLLM", "Meter", "label_of", "normal", "scores_from_logprobs", "scores_from_samples"]

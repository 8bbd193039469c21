"""Which active-learning settings can work together, and which a resumed run must keep.

Every check here runs before any work starts (and before the run folder is touched).
"""

from __future__ import annotations

from typing import Optional

from .. import models
from ..config import Config, same_setting
from ..errors import KdflowError
from ..tasks import task_kind
from .coldstart import COLD_STARTS
from .outputs import needs_members
from .strategies import NEEDS, TASKS_OF, names


def needs_teacher(cfg: Config) -> bool:
    """Whether the run asks the teacher anything: soft targets, labels, a strategy or a stopping rule."""
    ac = cfg.active
    return (cfg.distill.alpha > 0 or ac.oracle in ("teacher", "hybrid") or "teacher_probs" in NEEDS[ac.strategy]
            or (needs_members(ac.strategy) and ac.committee == "teacher_student") or ac.stop_parity is not None
            or ac.initial_strategy in COLD_STARTS)


def resolve(cfg: Config) -> tuple[Config, Optional[str]]:
    """``cfg`` with the unset keys resolved to what works with the others, and a line saying so (for the log).

    ``initial_strategy``: stratified where the pool's gold labels exist (oracle gold, or a seed set in data.train);
    else a cold start that needs none -- typicality under target teacher_calls or teacher (the teacher's calls are
    counted, or its head is not trained yet), balanced by the teacher's predictions where the run asks the teacher
    anyway, random where it asks it nothing. ``cold_start_labels`` asks for a cold start in any case."""
    ac = cfg.active
    check_strategies(cfg, [ac.strategy], "active.strategy")
    if ac.initial_strategy is not None:
        return cfg, None
    gold = ac.oracle == "gold" or (ac.oracle == "hybrid" and ac.hybrid_human == "gold") or bool(cfg.data.unlabelled)
    if task_kind(cfg.data.task).per_word:
        choice, why = "random", "tagged sentences have no single class to stratify or balance by"
    elif task_kind(cfg.data.task).label_sets and not ac.cold_start_labels:  # no single class to stratify by
        choice, why = ("random", "multilabel examples have label sets, not one class to stratify by")
    elif gold and not ac.cold_start_labels:
        choice, why = "stratified", "the pool's gold labels are known"
    elif ac.target in ("teacher", "teacher_calls"):
        choice, why = "typicality", f"target {ac.target} with oracle {ac.oracle}, no gold labels to stratify by"
    elif needs_teacher(cfg.model_copy(update={"active": ac.model_copy(update={"initial_strategy": "random"})})):
        choice = "balanced"
        why = f"oracle {ac.oracle} has no gold labels; the teacher's predictions balance the classes"
    else:
        choice, why = "random", f"oracle {ac.oracle} has no gold labels and this run asks the teacher nothing"
    if ac.cold_start_labels and choice == "stratified":
        choice, why = "balanced", "cold_start_labels asks for a cold start"
    done = cfg.model_copy(update={"active": ac.model_copy(update={"initial_strategy": choice})})
    return done, f"[active] initial_strategy {choice} (auto: {why})"


def import_strategy_modules(cfg: Config) -> None:
    """Import ``active.strategy_modules`` (dotted module names, or ``.py`` files), whose code registers strategies
    with :func:`kdflow.active.register_strategy`; a module imported before is not run again."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path
    for spec in cfg.active.strategy_modules:
        path = Path(spec)
        if spec.endswith(".py"):
            name = "kdflow_strategies_" + path.stem
            if not path.is_file():
                raise KdflowError(f"active.strategy_modules names '{spec}', which is not a file; give a .py file "
                                  "that registers strategies, or a module importable by name")
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
                continue
            found = importlib.util.spec_from_file_location(name, path.resolve())
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module
            runner = found.loader.exec_module
        else:
            try:
                importlib.import_module(spec)
            except ImportError as e:
                raise KdflowError(f"active.strategy_modules names '{spec}', which cannot be imported ({e}); give "
                                  "a module on the Python path or a .py file") from None
            continue
        try:
            runner(module)
        except Exception as e:  # the user's code: say whose it is
            sys.modules.pop(name, None)
            raise KdflowError(f"active.strategy_modules: importing '{spec}' failed: {type(e).__name__}: {e}") from None


def check_strategies(cfg: Config, wanted: list[str], where: str) -> None:
    """Every name in ``wanted`` is a strategy (built-in, or registered by ``active.strategy_modules``)."""
    import_strategy_modules(cfg)
    bad = [s for s in wanted if s not in NEEDS]
    if bad:
        raise KdflowError(f"Unknown strategy '{bad[0]}' in {where}; choose one of {', '.join(names())}, or register "
                          "your own with kdflow.active.register_strategy in a module named in "
                          "active.strategy_modules")


def _check_label_sets(cfg: Config) -> None:
    """Multi-label runs: what reads one class per example is refused, each in one sentence."""
    ac = cfg.active
    if ac.oracle in ("human", "hybrid"):
        raise KdflowError(f"active.oracle {ac.oracle} is not available for multilabel yet (its label files hold one "
                          "label per example); use oracle gold or teacher")
    if ac.initial_strategy in ("stratified", "balanced"):
        raise KdflowError(f"active.initial_strategy {ac.initial_strategy} sorts the pool by one class per example, "
                          "and multilabel examples have sets; use random or typicality")
    if ac.target == "teacher_calls" and "teacher_probs" in NEEDS[ac.strategy]:
        raise KdflowError(f"active.strategy {ac.strategy} asks the teacher about the pool, which target "
                          "teacher_calls estimates from single labels only; use mean_binary_entropy or "
                          "threshold_margin")


def _check_tags(cfg: Config) -> None:
    """Token tagging runs: what reads one output per example is refused, each in one sentence."""
    ac = cfg.active
    if ac.oracle == "hybrid":
        raise KdflowError("active.oracle hybrid splits a batch by the teacher's confidence in one label per example, "
                          "and tagged sentences have one per word; use oracle gold, teacher or human")
    if ac.initial_strategy not in (None, "random"):
        raise KdflowError(f"active.initial_strategy {ac.initial_strategy} reads one class or one embedding per "
                          "example, and token tagging has one per word; use random")
    if ac.target != "student":
        raise KdflowError(f"active.target {ac.target} is not available for token tagging yet; use target student")
    if ac.diversity > 1:
        raise KdflowError("active.diversity compares one embedding per example, and token tagging has one per word; "
                          "set active.diversity: 1")


def _check_distill(cfg: Config) -> None:
    dc = cfg.distill
    if cfg.data.augment:
        raise KdflowError("kdflow active trains each round on cached teacher logits, which augmented images "
                          "(data.augment) would not match; run it without augmentation: --set data.augment=[] "
                          "--set distill.mode=offline")
    unsupported = [name for name, on in (("distill.mode " + dc.mode, dc.mode != "offline"),
                                         ("distill.intermediate", dc.intermediate),
                                         ("distill.extra_teachers", bool(dc.extra_teachers))) if on]
    if unsupported:
        raise KdflowError(f"kdflow active trains each round on cached teacher logits (distill.mode offline), so "
                          f"{unsupported[0]} would be ignored; drop it for active learning (kdflow distill "
                          "supports it)")


def _check_committee(cfg: Config) -> None:
    ac = cfg.active
    if not needs_members(ac.strategy) or ac.committee != "checkpoints":
        return
    if ac.committee_size > cfg.train.epochs:
        raise KdflowError(f"active.committee_size {ac.committee_size} exceeds train.epochs {cfg.train.epochs}: the "
                          "committee is the student after each of its last epochs; lower committee_size")
    if cfg.train.patience and ac.committee_size > cfg.train.patience + 1:
        raise KdflowError(f"active.committee_size {ac.committee_size} exceeds train.patience + 1 = "
                          f"{cfg.train.patience + 1}: early stopping may end a round with fewer epochs than members; "
                          "lower committee_size or raise train.patience")


def check(cfg: Config) -> None:
    """Settings that cannot work together, named before any work starts."""
    ac, d = cfg.active, cfg.data
    kind = task_kind(d.task)
    if not kind.named:
        raise KdflowError(f"kdflow active needs data.task classification, multilabel or tokens (its strategies "
                          f"score label probabilities), and this data is {d.task}")
    if d.task not in TASKS_OF[ac.strategy]:
        raise KdflowError(f"active.strategy {ac.strategy} is not meant for data.task {d.task}; use one of "
                          f"{', '.join(names(d.task))}")
    if kind.label_sets:
        _check_label_sets(cfg)
    if kind.per_word:
        _check_tags(cfg)
    if d.values_column:
        raise KdflowError("kdflow active reads text pools; numeric sequences (data.values_column) are not supported")
    check_strategies(cfg, [ac.strategy], "active.strategy")
    _check_distill(cfg)
    simulated = ac.oracle == "gold" or (ac.oracle == "hybrid" and ac.hybrid_human == "gold")
    if d.unlabelled and simulated:
        raise KdflowError("The pool is data.unlabelled, which has no gold labels, so active.oracle gold (or hybrid "
                          "with hybrid_human gold) cannot label it; use oracle human, teacher or hybrid")
    if ac.target == "teacher_calls" and (ac.stop_parity is not None
                                          or (needs_members(ac.strategy) and ac.committee == "teacher_student")):
        asks = "stop_parity" if ac.stop_parity is not None else f"strategy {ac.strategy}"
        raise KdflowError(f"active.target teacher_calls counts every teacher call, and {asks} asks the teacher "
                          "about examples it does not label; pick a student strategy (margin, entropy, badge, "
                          "coreset, disagreement (estimated from the teacher's labels so far), committee: "
                          "checkpoints...) and stop on budget, rounds or stop_kappa")
    _check_teacher(cfg)
    if ac.target == "teacher_calls" and ac.initial_strategy == "balanced":
        raise KdflowError("active.initial_strategy balanced sorts the pool by the teacher's predictions, a call per "
                          "pool example, and target teacher_calls counts them; use typicality (on the student's "
                          "embeddings) or random")
    if ac.initial_strategy == "stratified" and not d.unlabelled and not simulated:
        raise KdflowError(f"active.initial_strategy stratified draws the seed set by the pool's gold labels, which "
                          f"oracle {ac.oracle} does not have; set active.initial_strategy: "
                          + ("typicality or random" if ac.target == "teacher_calls" else
                             "balanced (by the teacher's predictions) or random"))
    if ac.cold_start_labels and ac.initial_strategy not in COLD_STARTS:
        raise KdflowError(f"active.cold_start_labels keeps choosing batches by the cold-start strategy, and "
                          f"initial_strategy {ac.initial_strategy} is none; set initial_strategy: typicality or "
                          "balanced, or drop cold_start_labels")
    spec = cfg.model.student
    if "mc_probs" in NEEDS[ac.strategy] and ac.target != "teacher" and not spec.name and spec.dropout <= 0:
        raise KdflowError(f"active.strategy {ac.strategy} samples the student with MC dropout, but "  # checked once
                          "model.student.dropout is 0; set it above 0 (e.g. 0.1) or pick another strategy")  # built
    _check_committee(cfg)


def _check_teacher(cfg: Config) -> None:
    if cfg.active.target == "teacher":
        _check_teacher_target(cfg)
    if models.kind(cfg.model.teacher).fixed:
        _check_fixed_teacher(cfg)


def _check_fixed_teacher(cfg: Config) -> None:
    """A teacher used as it is (an LLM, a predictions file): never fine-tuned, and one whose prompts show
    labelled examples must not read them from a pool whose labels the simulation hides."""
    spec, ac = cfg.model.teacher, cfg.active
    if ac.target == "teacher":
        raise KdflowError(f"active.target teacher fine-tunes the teacher, and model.teacher (kind {spec.kind}) is "
                          "used as it is; use target teacher_calls (it labels what the student picks) or student")
    if models.kind(spec).reads_labels(spec) and not cfg.data.unlabelled:
        raise KdflowError("model.teacher.shots shows the teacher labelled examples, and in this simulation every "
                          "label of data.train is hidden until bought; give the pool as data.unlabelled (data.train "
                          "is then the labelled seed set), or set model.teacher.shots: 0")


def _check_teacher_target(cfg: Config) -> None:
    """target teacher: the labels train the teacher, so it cannot also be their oracle, and the student
    learns from it."""
    ac = cfg.active
    if ac.oracle in ("teacher", "hybrid"):
        raise KdflowError(f"active.target teacher fine-tunes the teacher on the labels, so they cannot come from it "
                          f"(oracle {ac.oracle}); use oracle gold or human")
    if needs_members(ac.strategy) or "teacher_probs" in NEEDS[ac.strategy] or ac.stop_parity is not None:
        what = "stop_parity" if ac.stop_parity is not None else f"strategy {ac.strategy}"
        raise KdflowError(f"active.target teacher ranks the pool with the teacher alone, and {what} needs the "
                          "student beside it; use margin, entropy, least_confidence, bald, coreset, badge or random")
    if cfg.distill.alpha == 0:
        raise KdflowError("active.target teacher distils the student from the improved teacher each round; set "
                          "distill.alpha above 0 (e.g. 0.9)")


def signature(cfg: Config) -> dict:
    """Settings a resumed run must share with the run it continues (budget, rounds and the
    stopping rules may change: raise the budget to buy more labels)."""
    ac, dc = cfg.active, cfg.distill
    return {"target": ac.target, "strategy": ac.strategy, "oracle": ac.oracle, "initial": ac.initial,
            "initial_strategy": ac.initial_strategy, "cold_start_labels": ac.cold_start_labels,
            "per_round": ac.per_round, "growth": ac.growth, "retrain": ac.retrain, "seed": ac.seed,
            **({"teacher": cfg.model.teacher.model_dump(mode="json"), "teach": cfg.teach.model_dump(mode="json")}
               if ac.target == "teacher" else {}),
            "diversity": ac.diversity, "student": cfg.model.student.model_dump(mode="json"),
            "alpha": dc.alpha, "temperature": dc.temperature, "logit_loss": dc.logit_loss, "dkd_alpha": dc.dkd_alpha,
            "dkd_beta": dc.dkd_beta, "max_length": cfg.data.max_length, "train_seed": cfg.train.seed}


# what runs saved before these keys were part of the signature could only have used
EARLIER_DEFAULTS = {"logit_loss": "hinton", "dkd_alpha": 1.0, "dkd_beta": 8.0, "cold_start_labels": None,
                   "target": "student"}


def check_resume(saved: dict, cfg: Config) -> None:
    """A resumed run keeps its signature; the first changed setting is named."""
    now, saved = signature(cfg), {**EARLIER_DEFAULTS, **saved}
    changed = [k for k, v in now.items() if not same_setting(saved.get(k), v)]
    if changed:
        k = changed[0]
        raise KdflowError(f"Cannot resume: active setting {k} was {saved.get(k)!r} and is now {now[k]!r}; "
                          "resume with the settings of the run, or --overwrite to start again")


__all__ = ["needs_teacher", "resolve", "check", "signature", "check_resume", "check_strategies",
           "import_strategy_modules"]

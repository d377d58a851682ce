"""The `retain` command line (also `python -m retain`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retain.errors import RetainError


OUT_HELP = "where the run's folder goes (the config's output_dir; default runs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retain", description="Measure and prevent forgetting in multimodal models.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines (for CI logs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a method (or several) through a sequence and evaluate")
    p.add_argument("config", help="YAML preset, e.g. configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4 methods=[ldifs]")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    p.add_argument("--report-to", default=None, metavar="TRACKERS",
                   help="also send metrics to experiment trackers: tensorboard, wandb, mlflow (comma-separated)")
    p.add_argument("--out", default=None, metavar="DIR", help=OUT_HELP)

    p = sub.add_parser("estimate", help="a run's memory per process and compute per step, from the config alone "
                                        "(no weights are loaded or downloaded)")
    p.add_argument("config", help="YAML preset, e.g. configs/mcit-ucit.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model=hf:llava-hf/llava-1.5-7b-hf")
    p.add_argument("--accelerate-config", default=None, metavar="YAML",
                   help="the accelerate config the run is launched with, e.g. configs/accelerate/fsdp.yaml")
    p.add_argument("--num-processes", type=int, default=None, help="processes (default: the accelerate config's, else 1)")
    p.add_argument("--text-tokens", type=int, default=512,
                   help="text tokens per training item, added to an MLLM's image tokens (default 512)")
    p.add_argument("--tflops", type=float, default=None,
                   help="sustained TFLOP/s per process, to turn the compute into seconds per step")
    p.add_argument("--json", action="store_true", help="print the estimates as JSON")

    p = sub.add_parser("study", help="run a study preset (configs/wings-study.yaml: LLaVA way vs WINGS way)")
    p.add_argument("config", help="YAML study preset with a `study:` key")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. limit=50")
    p.add_argument("--out", default=None, metavar="DIR", help=OUT_HELP)

    p = sub.add_parser("mine", help="MultiMon: mine, categorise, generate and evaluate text-encoder failures")
    p.add_argument("args", nargs="*", metavar="[CONFIG] key=value",
                   help="an optional YAML preset (configs/multimon.yaml), then overrides, e.g. corpus_size=20000")
    p.add_argument("--out", default=None, metavar="DIR", help=OUT_HELP)

    p = sub.add_parser("eval", help="EMT: evaluate an MLLM as an image classifier")
    p.add_argument("--model", required=True, help="an MLLM: hf:<hub id> or a saved model folder")
    p.add_argument("--tasks", default="fashion-mnist,animal-mnist,easyvqa-shape,easyvqa-color,textile,digits",
                   help="comma-separated classification tasks")
    p.add_argument("--mode", default="rule", choices=["rule", "judge", "likelihood"], help="how answers are scored")
    p.add_argument("--limit", type=int, default=200, help="test items per task (0: all)")
    p.add_argument("--encoder", default=None,
                   help="the MLLM's vision encoder as a dual encoder, for the zero-shot column (default: mini-clip for mini-llava)")
    p.add_argument("--template", default=None, help="prompt template with {noun} and {classes}")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", default=None, help="the judge's model name at that endpoint")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's key")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<model>-<mode>)")
    p.add_argument("--synonyms", default=None, metavar="YAML",
                   help="more names per class for the rule matcher: a YAML file of {class: [synonym, ...]}")

    p = sub.add_parser("compare", help="table of finished runs, methods as rows")
    p.add_argument("runs", nargs="+", help="run directories, or directories holding them")
    p.add_argument("--out", default=None, help="where to write comparison.* (default: the runs' common parent)")
    p.add_argument("--baseline", default=None,
                   help="method (or sweep label) the others are compared with, paired (default: finetune when present)")

    p = sub.add_parser("report", help="write report.html for a finished run (or a comparison for a folder of runs)")
    p.add_argument("run", help="a run, a folder of runs, a study, a mine or an eval folder")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="also save a picture of the report as headless Chromium shows it (needs selenium, chromium)")

    p = sub.add_parser("zoo", help="retain's small offline foundation models")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    b = zsub.add_parser("build", help="build a zoo model into the cache (no-op when cached)")
    b.add_argument("name", help="e.g. mini-clip")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    zsub.add_parser("list", help="zoo models and where they are cached")

    sub.add_parser("list", help="available tasks and methods")

    args = parser.parse_args(argv)
    if args.command in ("run", "study", "mine") and args.out:  # the same as an output_dir= override
        getattr(args, "args" if args.command == "mine" else "overrides").append(f"output_dir={args.out}")
    from retain.progress import quiet, set_quiet

    if args.quiet or quiet():  # --quiet or RETAIN_QUIET=1
        set_quiet(True)
    try:
        return COMMANDS[args.command](args)
    except RetainError as e:
        print(f"retain: error: {e}", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    from retain.config import load_config
    from retain.methods import expand_methods
    from retain.methods import create_method
    from retain.registry import model_family
    from retain.report import write_comparison, write_report

    from retain.tracking import trackers

    _allow_command_line_hosts(args.overrides)
    cfg = load_config(args.config, [*args.overrides, *([f"report_to={args.report_to}"] if args.report_to else [])])
    trackers(cfg.report_to)  # an unknown or missing tracker fails before any training
    from retain.methods import load_plugins

    load_plugins(cfg.plugins)
    from retain.data.instruct import check_conversation_files

    check_conversation_files(cfg.sequence)  # a missing download is named before any model is fetched
    variants = expand_methods(cfg)
    for v in variants:  # a bad method name or option (of every sweep value) fails before any model loads
        create_method(v.method, v.args)
    # a preset's options for methods not run this time are kept, and checked all the same (a typo is one)
    import dataclasses

    idle = sorted(set(cfg.method_args) - set(cfg.methods))
    for v in expand_methods(dataclasses.replace(cfg, methods=idle)):
        create_method(v.method, v.args)
    from retain.io import check_writable
    from retain.rundir import run_path

    group = Path(cfg.output_dir) / cfg.name
    if args.resume and not any(run_path(dataclasses.replace(cfg, seed=int(seed)), v.method, v.label).exists()
                               for v in variants for seed in cfg.seeds or [cfg.seed]):
        raise RetainError(f"--resume: there is no run to resume in {group} (check `name` and `output_dir`); "
                          "leave out --resume to start it.")
    check_writable(group)
    family = model_family(cfg.model, cfg.family, cfg.trust_remote_code)
    from retain.families import run_method

    for v in variants:
        create_method(v.method, v.args, family=family)
    runs = []
    for v in variants:
        for seed in cfg.seeds or [cfg.seed]:
            seeded = dataclasses.replace(cfg, seed=int(seed), method_args={**cfg.method_args, v.method: v.args}
                                         if v.method in cfg.method_args else cfg.method_args)
            run_method(seeded, v.method, family, resume=args.resume, label=v.label)
            runs.append(run_path(seeded, v.method, v.label))
    from retain.progress import is_main

    if not is_main():
        return 0
    for r in runs:
        write_report(r)
    table = write_comparison(runs, group)
    print(table)
    print(f"\nreports: {', '.join(str(r / 'report.html') for r in runs)}")
    print(f"comparison: {group / 'comparison.html'} (table in {group / 'comparison.md'})")
    return 0


def cmd_estimate(args) -> int:
    from retain import memory
    from retain.config import load_config
    from retain.methods import create_method, expand_methods, load_plugins

    cfg = load_config(args.config, args.overrides)
    load_plugins(cfg.plugins)
    if args.text_tokens < 0 or (args.num_processes is not None and args.num_processes < 1):
        raise RetainError("--text-tokens must be >= 0 and --num-processes >= 1.")
    layout = memory.layout_from_file(args.accelerate_config, args.num_processes, cfg.train.mixed_precision)
    config, kind = _model_config(cfg)
    out = []
    for v in expand_methods(cfg):
        method = create_method(v.method, v.args, family=kind)
        model, trained, stacks = _skeleton_run(cfg, config, kind, method, args.text_tokens)
        est = memory.estimate(model, trained, stacks, cfg.train, layout)
        out.append((v.label, est))
    if args.json:
        print(json.dumps({label: est.to_dict() for label, est in out}, indent=1, default=str))
        return 0
    print(f"{cfg.model} ({kind}), from its config; batch {cfg.train.batch_size}, "
          f"{cfg.train.gradient_accumulation} micro-batch(es) per step")
    for label, est in out:
        print(f"\n[{label}]")
        print("\n".join(est.lines(args.tflops)))
    return 0


def _model_config(cfg):
    """The transformers config of the run's model (zoo, hub id or folder) and its family."""
    from retain import memory
    from retain.models.dual_encoder import RETAIN_CONFIG
    from retain.registry import DUAL_ENCODER_TYPES, MODELS, zoo_folder

    name = cfg.model
    if name in MODELS:
        folder = zoo_folder(name, build=False)
        if not folder.is_dir():
            raise RetainError(f"{name} is not built yet: `retain zoo build {name}` first (minutes, offline).")
        name = str(folder)
    if not name.startswith("hf:") and (Path(name) / RETAIN_CONFIG).exists():
        return json.loads((Path(name) / RETAIN_CONFIG).read_text()), "dual_encoder"
    config = memory.model_config(name[3:] if name.startswith("hf:") else name, cfg.trust_remote_code)
    kind = cfg.family if cfg.family != "auto" else (
        "dual_encoder" if config.model_type in DUAL_ENCODER_TYPES else "mllm")
    return config, kind


def _skeleton_run(cfg, config, kind: str, method, text_tokens: int):
    """The run's model on the meta device, set up by `method`, its trained parameters and stacks."""
    import torch

    from retain import memory
    from retain.methods.base import TaskContext

    if kind == "mllm":
        from retain.models.mllm import MLLM

        model = MLLM(memory.skeleton(config), processor=None)
        module, trained_of = model.model, model
    else:
        from accelerate import init_empty_weights

        from retain.models.dual_encoder import DualEncoder, build_from_spec

        with init_empty_weights():
            if isinstance(config, dict):  # retain's own dual encoder folder (mini-clip)
                encoder = build_from_spec(config)
            else:
                clip = memory.skeleton(config)
                encoder = DualEncoder(clip.vision_model, clip.visual_projection, clip.text_model,
                                      clip.text_projection, tokenizer=None)
        model = torch.nn.Module()
        model.encoder, model.heads = encoder, torch.nn.ParameterDict()  # heads: a few class embeddings, left out
        module, trained_of = model, model
    try:
        method.setup(trained_of)
        if kind == "mllm":
            module = trained_of.model
        task = type("Task", (), {"name": "task-1"})()
        ctx = TaskContext(task=task, index=0, train=[], model=trained_of, tasks=[task], train_splits=[[]],
                          device=torch.device("meta"), seed=cfg.seed, batch_size=cfg.train.batch_size)
        try:
            trained = method.trainable(trained_of)
        except (LookupError, AttributeError, RetainError):  # parameters made per task
            from retain.progress import quiet, set_quiet

            was = quiet()
            set_quiet(True)  # the task's setup runs on no data: its progress bars say nothing
            try:
                method.before_task(ctx)
            finally:
                set_quiet(was)
            trained = method.trainable(trained_of)
    except (NotImplementedError, RuntimeError, TypeError, ValueError) as e:
        raise RetainError(f"Method {method.name!r} cannot be set up on a model without weights ({e}); estimate a "
                          "method that trains the same parameters (lora_ft for LoRA methods).") from e
    ids = {id(p) for p in trained}
    names = [n for n, p in module.named_parameters() if id(p) in ids]
    if kind == "mllm":
        from retain.models.mllm import profile_for

        profile = profile_for(getattr(module.config, "model_type", None))
        stacks = memory.mllm_stacks(module.config, names, memory.tokens_assumed(module.config, text_tokens),
                                    language_model=profile.language_model, vision_tower=profile.vision_tower,
                                    projector=profile.projector)
    else:
        enc = model.encoder
        stacks = memory.dual_encoder_stacks(enc.vision.config, getattr(enc.text, "config", None), names)
    return module, trained, stacks


def cmd_study(args) -> int:
    import yaml

    from retain.config import load_config

    path = Path(args.config)
    try:
        kind = (yaml.safe_load(path.read_text()) or {}).get("study") if path.exists() else None
    except (yaml.YAMLError, AttributeError) as e:
        raise RetainError(f"Study file {path} is not a YAML mapping: {e}") from e
    if kind != "wings":
        raise RetainError(f"{path}: `study:` must name a study (known: wings), got {kind!r}."
                          if path.exists() else f"Study file {path} does not exist.")
    from retain.wings.study import WingsStudyConfig, run_wings_study

    out = run_wings_study(load_config(path, args.overrides, cls=WingsStudyConfig))
    print((out / "table.md").read_text())
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_mine(args) -> int:
    from retain.config import load_config
    from retain.multimon.pipeline import MineConfig, run_mine

    config = args.args[0] if args.args and "=" not in args.args[0] else None
    overrides = args.args[1:] if config else args.args
    _allow_command_line_hosts(overrides)
    out = run_mine(load_config(config, overrides, cls=MineConfig))
    print((out / "table.md").read_text())
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_eval(args) -> int:
    from retain.data import load_task
    from retain.eval.emt import EMT_TEMPLATE, evaluate_emt
    from retain.io import write_json, write_text
    from retain.models.mllm import NORMALISED
    from retain.registry import default_encoder, load_dual_encoder, load_mllm
    from retain.rundir import versions

    from retain.config import EvalConfig
    from retain.eval.emt_match import check_synonyms

    tasks = [load_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise RetainError("--tasks names no task.")
    synonyms = EvalConfig(synonyms=args.synonyms).synonym_table() if args.synonyms else {}
    check_synonyms(synonyms, {t.name: t.class_names for t in tasks})  # before the model loads
    judge = None
    if args.mode == "judge":
        if not (args.judge_url and args.judge_model):
            raise RetainError("--mode judge needs --judge-url and --judge-model (the key comes from --judge-key-env).")
        from retain.eval.judge import LLMJudge
        from retain.llm import ChatClient
        from retain.paths import cache_dir

        client = ChatClient(args.judge_url, args.judge_model, api_key_env=args.judge_key_env,
                            cache_dir=str(cache_dir("judge")))
        client.probe()  # a dead endpoint stops here, before the model is loaded
        judge = LLMJudge(client)
    from retain.io import check_writable
    from retain.models import default_device

    out = Path(args.out or Path("runs") / "eval" / f"{Path(args.model.replace('hf:', '')).name}-{args.mode}")
    check_writable(out)
    mllm = load_mllm(args.model)
    mllm.model.to(default_device())
    encoder, encoder_name = None, args.encoder or default_encoder(args.model)
    if encoder_name:
        encoder = load_dual_encoder(encoder_name).to(default_device())
    rows, summaries, halted = [], [], None
    for task in tasks:
        res = evaluate_emt(mllm, task, args.mode, limit=args.limit or None, judge=judge, encoder=encoder,
                           template=args.template or EMT_TEMPLATE, synonyms=synonyms)
        write_text(out / "records" / f"{task.name.replace('/', '_')}.jsonl",
                   "".join(json.dumps(r, sort_keys=True) + "\n" for r in res.records))
        summaries.append(res.summary())
        c = res.counts
        fmt = (lambda v: "-" if v is None else f"{100 * v:.1f}")
        extra = ([fmt(getattr(res, f"accuracy_norm_{how}")) for how in NORMALISED] if args.mode == "likelihood"
                 else [fmt(res.rule_judge_agreement)] if args.mode == "judge" else [])
        rows.append(f"| {task.name} | {fmt(res.accuracy)} | " + "".join(f"{e} | " for e in extra)
                    + f"{fmt(res.encoder_zero_shot)} | {fmt(res.gap)} | "
                    f"{c['wrong_class']} | {c['several_classes']} | {c['outside_label_set']} | {c['judge_error']} |")
        if res.halted:  # the judge went down: keep what is judged, stop with one message
            halted = res.halted
            break
    write_json(out / "results.json", {"model": args.model, "mode": args.mode, "limit": args.limit,
                                      "encoder": encoder_name, "template": args.template or EMT_TEMPLATE,
                                      "synonyms": synonyms,
                                      "judge": {"url": args.judge_url, "model": args.judge_model} if judge else None,
                                      "tasks": summaries, "halted": halted, "versions": versions()})
    extra = {"likelihood": ["MLLM acc per token", "MLLM acc per character"],
             "judge": ["rule agrees with judge"]}.get(args.mode, [])
    header = ["task", "MLLM acc", *extra, "encoder zero-shot", "gap", "wrong class", "several classes",
              "outside label set", "judge errors"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]
    unscored = sum(s["unscored"] for s in summaries)
    if unscored:
        table.append(f"\n{unscored} item(s) unscored (judge errors): an accuracy covers the scored items only, "
                     "'-' where none was scored.")
    write_text(out / "emt.md", "\n".join(table) + "\n")
    from retain.report.emt import write_eval_report

    report = write_eval_report(out)
    print("\n".join(table))
    print(f"\nwritten: {out / 'results.json'}, {out / 'emt.md'}, {out / 'records'}/, {report}")
    if halted:
        from retain.llm import EndpointDown

        raise EndpointDown(f"{halted} Judged so far: {len(summaries)} of {len(tasks)} task(s), in {out}.")
    return 0


def cmd_compare(args) -> int:
    from retain.report import find_runs, write_comparison

    runs = find_runs(args.runs)
    out = Path(args.out) if args.out else Path(_common_parent(runs))
    print(write_comparison(runs, out, baseline=args.baseline))
    print(f"\nwritten: {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.html'}")
    return 0


def cmd_report(args) -> int:
    from retain.report import find_runs, write_comparison, write_report

    path = Path(args.run)
    if (path / "mined.jsonl").exists():
        from retain.multimon.pipeline import write_mine_report

        report = write_mine_report(path)
    elif (path / "emt.md").exists():
        from retain.report.emt import write_eval_report

        report = write_eval_report(path)
    elif (path / "results.json").exists():
        report = write_report(path)
    elif (path / "study.json").exists():
        from retain.wings.study import write_study_report

        report = write_study_report(path)
    else:
        runs = find_runs([str(path)])
        for r in runs:
            write_report(r)
        write_comparison(runs, path)
        report = path / "comparison.html"
    print(report)
    if args.screenshot:
        from retain.report.browser import screenshot

        print(screenshot(report, Path(args.screenshot)))
    return 0


def cmd_zoo(args) -> int:
    from retain import zoo

    if args.zoo_command == "list":
        for name in sorted(zoo.RECIPES):
            d = zoo.model_dir(name)
            built = "built" if (d / "DONE").exists() else "not built"
            if (d / "build.json").exists():  # which build: results depend on it
                info = json.loads((d / "build.json").read_text())
                built += (f" {info['built']} (torch {info['versions'].get('torch')}, transformers "
                          f"{info['versions'].get('transformers')}; weights " +
                          ", ".join(f"{k} {v[:12]}" for k, v in info["sha256"].items()) + ")")
            print(f"{name}\t{built}\t{d}")
        return 0
    if args.name not in zoo.RECIPES:
        from retain.errors import suggest

        raise RetainError(f"Unknown zoo model {args.name!r}.{suggest(args.name, zoo.RECIPES)} The zoo has {sorted(zoo.RECIPES)}.")
    print(zoo.build(args.name, force=args.force))
    return 0


def cmd_list(args) -> int:
    from retain.data import list_tasks
    from retain.methods import METHODS

    print("tasks:   " + ", ".join(list_tasks()) + ", hf:<dataset id>, folder:<path>")
    print("methods: " + ", ".join(sorted(METHODS)))
    return 0


def _allow_command_line_hosts(overrides: list[str]) -> None:
    """A key may go to an endpoint URL given on the command line (`eval.judge_url=...`, `lm_url=...`)."""
    from retain.llm import allow_hosts

    allow_hosts(item.split("=", 1)[1] for item in overrides
                if "=" in item and item.split("=", 1)[0].strip().endswith(("judge_url", "lm_url")))


def _common_parent(paths) -> str:
    import os

    return os.path.commonpath([str(p.resolve()) for p in paths]) if len(paths) > 1 else str(paths[0])


COMMANDS = {"run": cmd_run, "estimate": cmd_estimate, "study": cmd_study, "eval": cmd_eval, "mine": cmd_mine, "compare": cmd_compare, "report": cmd_report, "zoo": cmd_zoo, "list": cmd_list}

if __name__ == "__main__":
    sys.exit(main())

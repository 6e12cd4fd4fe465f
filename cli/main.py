"""`dha`: prepare, search, derive, export, evaluate, predict, benchmark, and run (all of them, resumably).

Commands import dha_pipeline lazily (at the top only the light `errors` and `choices`), so every command
starts fast and `dha predict` never imports torch.
Exit codes: 0 success, 2 user error (one line, no traceback), 1 failed check or bug.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cli.render import error_line, next_commands, print_table, silence, summary_table, warning_line
from dha_pipeline.errors import USER_ERROR_EXIT_CODE, DhaError
from dha_pipeline.choices import Split


app = typer.Typer(name="dha", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ready-to-deploy AutoML for image classification (DHA: data augmentation, "
                       "hyper-parameters and architecture, optimized jointly).")

RecipeArg = Annotated[Path, typer.Argument(help="a recipe .toml, a shipped recipe's name (dha recipes), or a "
                                                "runs/<name>/ directory", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: --set train.epochs=5 "
                                                                 "(repeatable)", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo the stage even if its inputs are unchanged")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from dha_pipeline import __version__

        try:
            installed = version("dha")
        except PackageNotFoundError:  # run from a checkout without installing
            installed = __version__
        typer.echo(f"dha {installed}")
        raise typer.Exit(0)


@app.callback()
def _options(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                        help="print dha's version and exit")] = False) -> None:
    """Ready-to-deploy AutoML for image classification (DHA: data augmentation, hyper-parameters and
    architecture, optimized jointly)."""


def _recipe(target: Path, overrides: list[str] | None, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    from dha_pipeline.stages import resolve_recipe

    return resolve_recipe(target, [*(overrides or []), *(extra or [])])


def _show(report) -> None:  # type: ignore[no-untyped-def]
    """A stage's warnings, then its summary table."""
    from cli.summaries import STAGE_ROWS

    for warning in report.warnings:
        warning_line(warning)
    title = f"dha {report.stage}" + (" (skipped: inputs and recipe unchanged)" if report.skipped else "")
    summary_table(title, STAGE_ROWS[report.stage](report.data))


def _next_after_export(recipe) -> None:  # type: ignore[no-untyped-def]
    """The commands that use what export wrote."""
    model = recipe.layout.exports.primary_model(recipe.export.formats)
    commands = [f"dha evaluate {model} --data {recipe.data.dataset} --split test",
                f"dha benchmark {recipe.layout.exports.root} --data {recipe.data.dataset}"]
    if model.suffix == ".onnx":
        commands.append(f"dha predict {model} IMAGE...")
    next_commands(*commands)


@contextmanager
def _processes(recipe) -> Iterator[bool]:  # type: ignore[no-untyped-def]
    """Join the torchrun process group, if launched by torchrun, for the block; yields whether this is
    the main process (the others print nothing but their errors)."""
    from dha_pipeline.device import resolve_device
    from dha_pipeline.distributed import is_main_process, process_group

    with process_group(resolve_device(recipe.device)):
        main_process = is_main_process()
        if not main_process:
            silence()
        yield main_process


def _data_flags(skip_bad: bool, download: bool) -> list[str]:
    return (["data.skip_bad=true"] if skip_bad else []) + (["data.download=true"] if download else [])


@app.command(epilog="Example: dha prepare recipes/digits_quickstart.toml")
def prepare(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
            skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip unreadable images, with a report")] = False,
            download: Annotated[bool, typer.Option("--download", help="allow torchvision to download")] = False
            ) -> None:
    """Read a dataset into a verified cache with fixed train/val/test splits."""
    from dha_pipeline import stages

    loaded = _recipe(recipe, set_, _data_flags(skip_bad, download))
    _show(stages.prepare(loaded, force=force))
    next_commands(f"dha search {recipe}")


@app.command(epilog="Example: dha search recipes/digits_quickstart.toml --set train.epochs=5")
def search(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
           resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")] = False
           ) -> None:
    """Search and train from the prepared cache: the joint DHA loop, or any baseline variant of it."""
    from dha_pipeline import stages

    loaded = _recipe(recipe, set_)
    with _processes(loaded):
        _show(stages.search(loaded, force=force, resume=resume))
    next_commands(f"dha derive {recipe}")


@app.command(epilog="Example: dha derive runs/digits_quickstart")
def derive(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Turn the trained network into a plain standalone module with its weights."""
    from dha_pipeline import stages

    loaded = _recipe(recipe, set_)
    _show(stages.derive(loaded, force=force))
    next_commands(f"dha export {loaded.layout.root}")


@app.command(epilog="Example: dha export runs/digits_quickstart --int8")
def export(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
           format_: Annotated[str | None, typer.Option("--format", show_default=False,
                                                      help="comma-separated model formats (export.formats' "
                                                           "choices)")] = None,
           int8: Annotated[bool, typer.Option("--int8", help="also write model.int8.onnx (static int8 quantization, "
                                                            "calibrated on training images), failing when its val "
                                                            "top-1 drops more than export.int8_max_drop points")]
           = False) -> None:
    """Export ONNX, TorchScript and the PyTorch 2 format with metadata, gated on numeric parity with torch."""
    import json

    from dha_pipeline import stages

    extra = [f"export.formats={json.dumps([f.strip() for f in format_.split(',') if f.strip()])}"] if format_ else []
    extra += ["export.int8=true"] if int8 else []
    loaded = _recipe(recipe, set_, extra)
    _show(stages.export(loaded, force=force))
    _next_after_export(loaded)


@app.command(epilog="Example: dha evaluate exports/digits_quickstart/model.onnx --data digits --split test")
def evaluate(model: Annotated[Path, typer.Argument(help="model.onnx, model.ts or runs/<name>/derived/child.pt",
                                                   show_default=False)],
             data: Annotated[str | None, typer.Option("--data", help="dataset spec (default: the model's own)",
                                                      show_default=False)] = None,
             split: Annotated[Split, typer.Option("--split", help="the split to score")] = "test",
             batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 256,
             latency_runs: Annotated[int, typer.Option("--latency-runs", min=1)] = 30,
             out: Annotated[Path | None, typer.Option("--out", help="evaluation JSON path", show_default=False)] = None,
             download: Annotated[bool, typer.Option("--download", help="allow torchvision to download")] = False
             ) -> None:
    """Accuracy, per-class accuracy, confusion matrix and latency of a model file on held-out data."""
    from cli.summaries import evaluation_rows
    from dha_pipeline.evaluate import evaluate_file

    result = evaluate_file(model, dataset=data, split=split, batch_size=batch_size, latency_runs=latency_runs,
                           out=out, download=download)
    for warning in result.warnings:
        warning_line(warning)
    summary_table("dha evaluate", {**evaluation_rows(result.report, result.json_path),
                                   "confusion matrix": str(result.confusion_png)})
    next_commands(f"dha predict {model} IMAGE...")


@app.command(epilog="Example: dha predict exports/digits_quickstart/model.onnx a.png b.jpg")
def predict(model: Annotated[Path, typer.Argument(help="an exported model.onnx", show_default=False)],
            images: Annotated[list[str], typer.Argument(help="image files, folders (every image below) and glob "
                                                             "patterns such as 'photos/**/*.jpg'",
                                                        show_default=False)],
            top_k: Annotated[int, typer.Option("--top-k", min=1)] = 3,
            batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="images per model call")] = 32,
            as_json: Annotated[bool, typer.Option("--json", help="one JSON object per image and line: path and "
                                                                 "top-k labels with probabilities")] = False) -> None:
    """Top-k labels per image (onnxruntime, numpy and Pillow only). An unreadable image is reported by path
    and the others go on; the exit code is then 1 (2 when no image could be read)."""
    import json

    from rich.table import Table

    from dha_pipeline.predict import predict as run_predict

    result = run_predict(model, list(images), top_k, batch_size)
    if not result.predictions:
        raise DhaError(f"no image could be read ({len(result.unreadable)} tried; first: "
                       f"{result.unreadable[0][1]})", "pass readable image files")
    if as_json:
        for prediction in result.predictions:
            sys.stdout.write(json.dumps(prediction.to_dict()) + "\n")
        for path, reason in result.unreadable:
            sys.stdout.write(json.dumps({"path": path, "error": reason}) + "\n")
    else:
        table = Table(title="dha predict", title_justify="left")
        table.add_column("image")
        for rank in range(top_k):
            table.add_column(f"#{rank + 1}")
        for prediction in result.predictions:
            table.add_row(prediction.path, *(f"{label} {100 * p:.1f}%" for label, p in prediction.top))
        print_table(table)
    for _, reason in result.unreadable:
        warning_line(f"skipped: {reason}")
    if result.unreadable:
        raise typer.Exit(1)


@app.command(epilog="Example: dha benchmark exports/digits_quickstart --data digits")
def benchmark(export_dir: Annotated[Path, typer.Argument(help="an export folder, exports/<name>/", show_default=False)],
              data: Annotated[str | None, typer.Option("--data", help="dataset spec (default: the model's own)",
                                                       show_default=False)] = None,
              split: Annotated[Split, typer.Option("--split", help="the split to score")] = "test",
              runs: Annotated[int, typer.Option("--runs", min=1, help="timed batch-1 calls per format (>= 50)")] = 100,
              threads: Annotated[int | None, typer.Option("--threads", min=1, show_default=False,
                                                          help="threads for torch and onnxruntime alike "
                                                               "(default: every core)")] = None,
              provider: Annotated[str | None, typer.Option("--provider", show_default=False,
                                                           help="onnxruntime provider: cpu, cuda or a full name "
                                                                "(default: CUDA when installed, else CPU)")] = None,
              min_top1: Annotated[float | None, typer.Option("--min-top1", min=0.0, max=1.0, show_default=False,
                                                             help="exit 1 when a format's top-1 is below this "
                                                                  "fraction, e.g. 0.95")] = None,
              download: Annotated[bool, typer.Option("--download", help="allow torchvision to download")] = False
              ) -> None:
    """Every format of an export (torch eager, TorchScript, .pt2, ONNX fp32, ONNX int8) through the same front
    end: top-1, batch-1 latency (median, p90), batch-32 throughput and file size; writes benchmark.csv."""
    from rich.table import Table

    from dha_pipeline.benchmark import benchmark_export, enforce_min_top1
    from dha_pipeline.layout import ExportLayout

    rows = benchmark_export(export_dir, dataset=data, split=split, runs=runs, threads=threads, provider=provider,
                            download=download)
    first = rows[0]
    threads = f"{first.threads} thread" + ("s" if first.threads != 1 else "")
    table = Table(title=f"dha benchmark: {first.split} split ({first.num_samples} images), {threads}, {first.machine}",
                  title_justify="left")
    for column in ("format", "file", "size", "provider", "top-1", "balanced acc.", "macro-F1", "batch 1 median",
                   "batch 1 p90", "batch 32"):
        table.add_column(column, justify="left" if column in ("format", "file", "provider") else "right")
    for row in rows:
        table.add_row(row.label, row.file, f"{row.size_mb:.2f} MB", row.provider, f"{100 * row.top1:.2f}%",
                      f"{100 * row.balanced_accuracy:.2f}%", f"{100 * row.macro_f1:.2f}%",
                      f"{row.batch1_p50_ms:.3f} ms", f"{row.batch1_p90_ms:.3f} ms",
                      f"{row.batch32_images_per_s:,.0f} img/s")
    print_table(table)
    layout = ExportLayout(export_dir)
    summary_table("dha benchmark", {"formats": len(rows), "csv": str(layout.benchmark_csv),
                                    "plot": str(layout.benchmark_png), "model card": str(layout.model_card)})
    if min_top1 is not None:
        enforce_min_top1(rows, min_top1)


@app.command("profile-latency", epilog="Example: dha profile-latency recipes/cifar10_mobilenet.toml")
def profile_latency(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Measure the per-block latency table (onnxruntime, batch 1, this machine) for the recipe's space and shapes."""
    from dha_pipeline import stages

    loaded = _recipe(recipe, set_)
    _show(stages.prepare(loaded))
    _show(stages.profile_latency(loaded))
    next_commands(f"dha run {recipe} --set search.max_latency_ms=...")


@app.command(epilog="Example: dha run recipes/digits_quickstart.toml --set train.epochs=5")
def run(ctx: typer.Context, recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
        resume: Annotated[bool, typer.Option("--resume", help="continue training from the last checkpoint")] = False,
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip unreadable images, with a report")] = False,
        download: Annotated[bool, typer.Option("--download", help="allow torchvision to download")] = False,
        smoke: Annotated[bool, typer.Option("--smoke", help="the recipe's full-size networks through every stage on "
                                                           "a few synthetic images, as <name>_smoke")] = False,
        smoke_classes: Annotated[int | None, typer.Option("--smoke-classes", min=2, show_default=False,
                                                          help="classes of the smoke data (default: what the "
                                                               "dataset kind implies, else 10)")] = None,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="processes on this node, started through "
                                                                  "torchrun (one per GPU; gloo on CPU)")] = 1,
        nnodes: Annotated[str, typer.Option("--nnodes", help="torchrun's --nnodes (e.g. 2, or 1:4)")] = "1",
        node_rank: Annotated[int, typer.Option("--node-rank", min=0, help="torchrun's --node-rank "
                                                                          "(several nodes, no rendezvous)")] = 0,
        rdzv_endpoint: Annotated[str | None, typer.Option("--rdzv-endpoint", show_default=False,
                                                          help="torchrun's c10d rendezvous HOST:PORT "
                                                               "(several nodes)")] = None,
        rdzv_id: Annotated[str, typer.Option("--rdzv-id", help="torchrun's rendezvous job id")] = "dha",
        new_name: Annotated[bool, typer.Option("--new-name", help="when runs/<name>/ exists, run as <name>-2, "
                                                                  "<name>-3, ... instead")] = False,
        ) -> None:
    """prepare -> search -> derive -> export -> evaluate, skipping stages whose inputs are unchanged."""
    from dha_pipeline import stages

    loaded = _recipe(recipe, set_, _data_flags(skip_bad, download))
    argv = ctx.obj["argv"]
    if new_name:
        loaded = stages.fresh_name(loaded)
        argv = [*(arg for arg in argv if arg != "--new-name"), "--set", f"name={loaded.name}"]  # one name for all
    if nproc > 1 or nnodes != "1":
        if smoke:
            raise DhaError("--smoke runs on one process", "drop --nproc/--nnodes, or drop --smoke")
        from dha_pipeline.launch import Launch, forwarded, run_processes

        code = run_processes(Launch(nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id), forwarded(argv))
        if code:
            raise typer.Exit(code)
        return
    if smoke:
        from cli.summaries import smoke_rows
        from dha_pipeline.smoke import child_summary, smoke_recipe

        loaded = smoke_recipe(loaded, smoke_classes)
        stages.run_all(loaded, force=True, on_stage=_show)
        summary_table(f"dha run --smoke {loaded.name}: passed", smoke_rows(child_summary(loaded)))
        return
    with _processes(loaded) as main_process:
        reports = stages.run_all(loaded, force=force, resume=resume, on_stage=_show)
    if not main_process:
        return
    from cli.summaries import run_rows

    summary_table(f"dha run {loaded.name}", run_rows(reports, loaded.layout.exports.root))
    _next_after_export(loaded)


@app.command(epilog="Example: dha recipes imagenet_mobilenet --to my_recipe.toml")
def recipes(name: Annotated[str | None, typer.Argument(help="a shipped recipe to copy out", show_default=False)] = None,
            to: Annotated[Path | None, typer.Option("--to", help="where to copy it (a file or a folder; default: "
                                                                 "<name>.toml here)", show_default=False)] = None,
            force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False) -> None:
    """List the recipes shipped with dha, or copy one out to edit. Any command takes a shipped recipe by name."""
    from rich.table import Table

    from dha_pipeline.shipped import copy_recipe, describe, shipped_recipes

    if name is None:
        table = Table(title="shipped recipes (dha run NAME, or dha recipes NAME to copy one out)")
        for column in ("name", "what it is", "file"):
            table.add_column(column)
        for recipe_name, path in shipped_recipes().items():
            table.add_row(recipe_name, describe(path), str(path))
        print_table(table)
        return
    written = copy_recipe(name, to if to is not None else Path(f"{Path(name).stem}.toml"), force=force)
    typer.echo(f"wrote {written}")
    next_commands(f"dha run {written}")


@app.command(epilog="Example: dha runs runs --sort test_top1 --descending")
def runs(runs_dir: Annotated[Path, typer.Argument(help="the folder the runs are in")] = Path("runs"),
         sort: Annotated[str | None, typer.Option("--sort", help="a column to sort by (name, space, mode, "
                                                                 "components, params, macs, latency_ms, val_top1, "
                                                                 "test_top1, wall_s, status)",
                                                  show_default=False)] = None,
         descending: Annotated[bool, typer.Option("--descending", help="largest first")] = False,
         csv_path: Annotated[Path | None, typer.Option("--csv", help="where the CSV goes (default: "
                                                                    "RUNS_DIR/runs.csv)", show_default=False)] = None
         ) -> None:
    """Every run in one table (what it searched, its cost, accuracy, time and status), also written as CSV."""
    from rich.table import Table

    from dha_pipeline.runs_index import COLUMNS, run_table, write_run_table

    rows = run_table(runs_dir, sort, descending)
    table = Table(title=f"dha runs: {runs_dir} ({len(rows)} runs)", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("params", "macs", "latency_ms", "val_top1",
                                                                "test_top1", "wall_s") else "left")
    for row in rows:
        table.add_row(*(_cell(column, row[column]) for column in COLUMNS))
    print_table(table)
    target = csv_path or runs_dir / "runs.csv"
    write_run_table(rows, target)
    summary_table("dha runs", {"runs": len(rows), "csv": str(target)})


def _cell(column: str, value: object) -> str:
    if value == "" or value is None:
        return "-"
    if column in ("val_top1", "test_top1"):
        return f"{100 * float(value):.2f}%"  # type: ignore[arg-type]
    if column in ("params", "macs"):
        return f"{int(value):,}"  # type: ignore[call-overload]
    if column == "latency_ms":
        return f"{float(value):.2f}"  # type: ignore[arg-type]
    return str(value)


def _ranked(message: str) -> str:
    """An error line, naming the process when torchrun started several (read from torchrun's environment,
    so that `dha predict` still imports no torch)."""
    import os

    return f"(rank {os.environ['RANK']}) {message}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else message


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        # a command's typer.Exit(n) returns n here; `obj` hands `dha run --nproc` the user's own command line
        code = app(args=argv, standalone_mode=False, prog_name="dha", obj={"argv": argv})
    except DhaError as exc:
        error_line(_ranked(str(exc)))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        error_line("aborted")
        return 130
    except typer.TyperException as exc:  # typer >= 0.29: the base of its (vendored) click errors
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "dha"
        message = exc.format_message()  # type: ignore[attr-defined]
        if message:  # empty when help was shown for a bare `dha`
            error_line(f"{message} (see `{command} --help`)")
        return int(getattr(exc, "exit_code", USER_ERROR_EXIT_CODE))
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

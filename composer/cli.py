"""The ``composer`` command line.

Commands live in :mod:`composer.commands`, one module per area, each with a
``register(app)`` function. User-input errors (:class:`~composer.errors.ComposerError`)
are printed without a traceback and exit with status 1; usage errors exit with 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import typing

import typer

from composer.commands.core import DATASET_HELP
from composer.errors import ComposerError

app = typer.Typer(
    name="composer",
    help="Declarative multimodal fusion models: validate, build, train, evaluate, search and render YAML blueprints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        import composer

        try:
            installed = version("fusion-composer")
        except PackageNotFoundError:  # run from a source tree that is not installed
            installed = composer.__version__
        typer.echo(f"composer {installed} (fusion-composer; Python {sys.version.split()[0]})")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Declarative multimodal fusion models: validate, build, train, evaluate, search and render YAML blueprints."""


#: The commands that read a blueprint (a file's, or a run's or weights file's saved one): each
#: takes ``--allow-plugins``, the one way to let a blueprint's ``plugins:`` be imported.
BLUEPRINT_COMMANDS = ("validate", "build", "render", "bench", "train", "evaluate", "predict", "compare", "export", "search", "reproduce", "robustness", "import-weights")
PLUGINS_HELP = "Import the Python modules the blueprint lists under `plugins:` (a saved run's blueprint too; search workers inherit it). Never without this flag."


def _with_plugins_flag(callback):
    """The command with ``--allow-plugins``: it sets this process's plug-in policy
    (:func:`composer.registry.allow_plugins`) before the command runs."""
    import functools
    import inspect

    from composer.registry import allow_plugins

    signature = inspect.signature(callback, eval_str=True)
    declared = "allow_plugins" in signature.parameters

    @functools.wraps(callback)
    def run(*args, **kwargs):
        allow_plugins(kwargs.get("allow_plugins", False) if declared else kwargs.pop("allow_plugins", False))
        return callback(*args, **kwargs)

    if not declared:
        flag = inspect.Parameter("allow_plugins", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                 default=typer.Option(False, "--allow-plugins", help=PLUGINS_HELP))
        signature = signature.replace(parameters=[*signature.parameters.values(), flag])
    run.__signature__ = signature
    run.__annotations__ = {name: p.annotation for name, p in signature.parameters.items()}
    return run


def _option_flags(parameter) -> tuple[str, ...]:
    """The ``--flags`` of a command parameter, declared as its default (``= typer.Option(default,
    "--set")``) or in its ``Annotated`` metadata (``typer.Option("--set")``: the flag comes first)."""
    infos = [parameter.default, *getattr(parameter.annotation, "__metadata__", ())]
    return tuple(
        flag
        for info in infos if isinstance(info, typer.models.OptionInfo)
        for flag in (info.default, *(info.param_decls or ())) if isinstance(flag, str) and flag.startswith("-")
    )


def _with_dataset_flag(callback):
    """A command that takes ``--set`` and not yet ``--dataset``, with ``--dataset NAME``: the
    override ``dataset=NAME``, put before the other ``--set`` values."""
    import functools
    import inspect

    signature = inspect.signature(callback, eval_str=True)
    sets = [n for n, p in signature.parameters.items() if "--set" in _option_flags(p)]
    if not sets or "dataset" in signature.parameters:
        return callback
    name = sets[0]

    @functools.wraps(callback)
    def run(*args, **kwargs):
        dataset = kwargs.pop("dataset", None)
        if dataset:
            kwargs[name] = [f"dataset={dataset}", *(kwargs.get(name) or [])]
        return callback(*args, **kwargs)

    flag = inspect.Parameter("dataset", inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[str],
                             default=typer.Option(None, "--dataset", help=DATASET_HELP))
    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), flag])
    run.__annotations__ = {n: p.annotation for n, p in run.__signature__.parameters.items()}
    return run


def _register_commands() -> None:
    import composer.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}").register(app)
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        if name in BLUEPRINT_COMMANDS:
            command.callback = _with_plugins_flag(_with_dataset_flag(command.callback))


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning ComposerError into a clean message and exit 1."""
    try:
        result = app(args=argv, standalone_mode=False)
        if isinstance(result, int):  # typer.Exit(code) is returned, not raised, outside standalone mode
            if result == 130:  # typer turns Ctrl-C into Exit(130)
                print("interrupted", file=sys.stderr)
            return result
    except ComposerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        # Composer's own commands end through typer.Exit (returned above); a SystemExit comes from
        # foreign code (a library calling sys.exit) and never counts as success.
        if isinstance(exc.code, int) and exc.code != 0:
            return exc.code  # a failure stays a failure (a closed pipe under `| head` ends here too)
        print(f"error: the command was ended by an unexpected exit request ({exc.code!r}); nothing was completed", file=sys.stderr)
        return 1
    except Exception as exc:
        # usage errors from click (vendored by typer as typer._click): show usage, exit 2
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return 2 if exc.exit_code not in (0, 1) else exc.exit_code
        if type(exc).__name__ == "Abort":  # click turns Ctrl-C into Abort
            print("interrupted", file=sys.stderr)
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

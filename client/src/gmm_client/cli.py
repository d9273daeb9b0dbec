"""``gmm``: the command line of gmm-service (typer for commands, rich for tables and bars).

Every command is a thin shell over one or two ``Client`` calls; what this module adds
is reading files, resolving model names, drawing tables and turning problems into
exit codes. Problems are caught once, in ``_ProblemGroup.invoke``, so every command
(and every test that drives one through ``CliRunner``) fails the same way.

Only the service reads CSV: a CSV file (or ``-``, CSV on stdin) is streamed as it is
to ``POST /v1/datasets`` as ``text/csv`` (``; header=present|absent`` for
``--header/--no-header``), and ``fit`` and ``select`` then name the dataset by id. So
there is one header rule and one row numbering, the service's, and a bad cell is
reported as the service names it (``row 1, column 1``: rows counted from 0 after the
header, blank lines skipped). ``predict``, whose route takes only JSON or ``.npy``
points, uploads the CSV the same way and then takes its rows as the service counted
them, checked against the dataset's sha256 (see ``read_points``). ``.npy`` files are
loaded here and sent as ``.npy``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn

import httpx
import numpy as np

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text
    from typer.core import TyperGroup
except ImportError as exc:  # pragma: no cover - depends on the install
    raise SystemExit("the gmm command needs typer and rich: pip install 'gmm-client[cli]'") from exc

from gmm_client.client import DEFAULT_URL, Client, Dataset
from gmm_client.errors import GMMError, InvalidInput, JobFailed, NotFound, ProblemError

__all__ = ["EXIT_CODES", "app", "exit_code_for", "main"]

JSON = dict[str, Any]

ALGORITHMS = ("gaussian_mixture", "bayesian_gaussian_mixture", "kmeans", "minibatch_kmeans")
MIXTURES = frozenset({"gaussian_mixture", "bayesian_gaussian_mixture"})
MODEL_ID = re.compile(r"[0-9a-f]{28}")

#: HTTP status of a problem -> exit code. Anything else (5xx included) exits 1.
EXIT_CODES: dict[int, int] = {
    400: 2,
    415: 2,
    422: 2,
    404: 3,
    401: 4,
    403: 4,
    413: 5,
    429: 5,
    503: 5,
}
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT

EPILOG = (
    "Exit codes: 0 success;\n\n"
    "1 server error, connection failure or anything else;\n\n"
    "2 usage error, unreadable file, or input the service refused (400, 415, 422);\n\n"
    "3 not found (404);\n\n"
    "4 missing or wrong API key (401, 403);\n\n"
    "5 too large or busy (413, 429, 503);\n\n"
    "130 interrupted (Ctrl-C cancels the running job)."
)


def exit_code_for(status: int) -> int:
    """The exit code for a problem's HTTP ``status`` (see ``EXIT_CODES``)."""
    return EXIT_CODES.get(status, 1)


class BadFile(GMMError):
    """A local file the command cannot read as points (or write to): exit 2."""


@dataclass
class State:
    """The global options, and the one ``Client`` a command needs (made on first use)."""

    url: str
    api_key: str | None
    json: bool
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, api_key=self.api_key or None, timeout=300.0)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _stderr() -> Console:
    # Made per call: a test runner swaps sys.stderr between invocations.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or captured: never cut a column (ids are long) to fit 80 characters.
        console = Console(highlight=False, width=max(console.width, 200))
    return console


def _fail(message: str, code: int) -> NoReturn:
    _stderr().print(Text(message, style="red"))
    raise typer.Exit(code)


def _report_problem(err: ProblemError) -> None:
    """``title: detail``, then one ``loc: msg`` line per field error the detail does
    not already state, in red.

    The service's detail restates its first field error (``body.params.x: msg (and 2
    more)``, or the message itself for a problem with one error): printing both showed
    every such error twice. Later errors may share the first one's message (two fields
    that are not integers), so only the first is matched by its message alone."""
    console = _stderr()
    title = err.title or f"HTTP {err.status}"
    console.print(Text(f"{title}: {err.detail}" if err.detail else title, style="red"))
    for i, error in enumerate(err.errors):
        loc = ".".join(str(part) for part in error.get("loc", []))
        msg = str(error.get("msg", ""))
        if (i == 0 and msg in err.detail) or f"{loc}: {msg}" in err.detail:
            continue
        console.print(Text(f"  {loc}: {msg}", style="red"))


def _no_flag_placeholders(command: Any, ctx: Any) -> None:
    """Leave the type column of flags blank in every command's help.

    typer's rich help (0.29) gives every option a type placeholder, flags included,
    so ``--json``, ``--header/--no-header`` and ``--help`` showed ``<bool>`` as if they
    took a value; it prints a metavar instead when one is set, and an empty one
    prints nothing. Options that take a value keep theirs."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _no_flag_placeholders(sub, ctx)


class _ProblemGroup(TyperGroup):
    """The root group: every failure of every command becomes a message and an exit
    code here, in one place."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Before any --help is answered (it is, while the arguments are parsed).
        _no_flag_placeholders(self, ctx)
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ProblemError as err:
            _report_problem(err)
            raise typer.Exit(exit_code_for(err.status)) from None
        except JobFailed as err:
            _fail(str(err), 1)
        except BadFile as err:
            _fail(str(err), 2)
        except httpx.TransportError as err:
            state = ctx.find_object(State)
            url = state.url if state is not None else DEFAULT_URL
            _fail(
                f"cannot reach the service at {url} ({err or type(err).__name__}); "
                "is it running? Point the command at it with --url or $GMM_URL.",
                1,
            )
        finally:
            state = ctx.find_object(State)
            if state is not None:
                state.close()


#: Help text is rich markup on every typer version (the default changed over them), so
#: square brackets in it are written escaped (``escape("[default: stdout]")``):
#: unescaped, rich takes ``[default: stdout]`` for a style tag and drops the words.
MARKUP = "rich"

app = typer.Typer(
    cls=_ProblemGroup,
    name="gmm",
    help="Train and use Gaussian mixtures and k-means on a gmm-service.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=MARKUP,
)
models_app = typer.Typer(
    help="List, show and delete models.", no_args_is_help=True, rich_markup_mode=MARKUP
)
datasets_app = typer.Typer(
    help="List and delete stored datasets.", no_args_is_help=True, rich_markup_mode=MARKUP
)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="GMM_URL", help="The service's base URL.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="GMM_API_KEY", help="API key (sent as X-API-Key).", show_default=False),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables (for scripts).")
    ] = False,
) -> None:
    """Train and use Gaussian mixtures and k-means on a gmm-service."""
    ctx.obj = State(url=url, api_key=api_key, json=json_output)


def _state(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    assert state is not None, "the root callback makes the State"
    return state


# -- files ---------------------------------------------------------------------------


def _is_npy(path: str) -> bool:
    return path != "-" and Path(path).suffix.lower() == ".npy"


def _csv_type(header: bool | None) -> str:
    """``text/csv``, with RFC 7111's ``header`` parameter when the user said."""
    if header is None:
        return "text/csv"
    return f"text/csv; header={'present' if header else 'absent'}"


NPY_MAGIC = b"\x93NUMPY"


def _not_npy(path: str, head: bytes) -> str:
    """Why a file named ``.npy`` without numpy's magic is refused, in terms of what it is.

    ``numpy.load`` takes any such file for a pickle ("This file contains pickled
    (object) data"), which for the CSV or text file it usually is sends people looking
    for a pickle."""
    if head.startswith(b"PK\x03\x04"):
        return f"{path}: a .npz (zip) archive, not a .npy file; save one array with numpy.save"
    try:
        text = head.decode("utf-8-sig") if head else ""
    except UnicodeDecodeError:
        text = ""
    if text.strip() and all(c.isprintable() or c in "\t\r\n" for c in text):
        return (
            f"{path}: not a .npy file but text (a .npy file is binary, and starts with "
            "numpy's \\x93NUMPY magic whatever it is named); if it is CSV, name it .csv, "
            "or give it as - on stdin"
        )
    return f"{path}: not a .npy file (it does not start with numpy's \\x93NUMPY magic)"


def read_npy(path: str) -> np.ndarray:
    """The points of a ``.npy`` file, as float64 (read by numpy's ``.npy`` reader
    itself, never unpickled)."""
    file = Path(path)
    if not file.is_file():
        raise BadFile(f"{path}: no such file")
    try:
        with open(file, "rb") as fp:
            head = fp.read(64)
            if not head.startswith(NPY_MAGIC):
                raise BadFile(_not_npy(path, head))
            fp.seek(0)
            X = np.lib.format.read_array(fp, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadFile(f"{path}: not a readable .npy file: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise BadFile(f"{path}: holds {X.dtype} values; points must be numbers")
    return np.asarray(X, dtype=np.float64)


@contextmanager
def _csv_file(path: str) -> Iterator[BinaryIO]:
    """The CSV's bytes, unread: a file, or stdin for ``-``."""
    if path == "-":
        yield sys.stdin.buffer
        return
    if not Path(path).is_file():
        raise BadFile(f"{path}: no such file")
    with open(path, "rb") as file:
        yield file


def _upload_csv(
    client: Client, path: str, data: bytes | BinaryIO, header: bool | None
) -> tuple[JSON, bool]:
    """Send a CSV to ``POST /v1/datasets``: the service alone parses CSV, so its rows
    and its row numbers are the only ones (its message is prefixed with the file)."""
    name = None if path == "-" else Path(path).name
    try:
        return client.upload_dataset(data, _csv_type(header), name=name)
    except InvalidInput as err:
        source = "stdin" if path == "-" else path
        err.problem["detail"] = f"{source}: {err.detail}"
        raise


def upload_points(client: Client, path: str, *, header: bool | None = None) -> Dataset:
    """A stored dataset of the points in a ``.npy`` file, a CSV file or CSV on stdin
    (``-``); a CSV is streamed as it is, for the service to read."""
    if _is_npy(path):
        X = read_npy(path)
        return Dataset(client.create_dataset(X, name=Path(path).name)["id"])
    with _csv_file(path) as file:
        dataset, _ = _upload_csv(client, path, file, header)
    return Dataset(dataset["id"])


def read_points(client: Client, path: str, *, header: bool | None = None) -> np.ndarray:
    """The points of a file as an array, for a route that takes no dataset id
    (predict). A CSV is still read by the service: it is stored as a dataset (then
    deleted, unless it was stored already), and its rows are taken here as the
    service counted them (the last ``n_samples`` non-blank lines) and checked
    against the dataset's sha256, so both sides hold the same points."""
    if _is_npy(path):
        return read_npy(path)
    with _csv_file(path) as file:
        data = file.read()
    dataset, created = _upload_csv(client, path, data, header)
    try:
        rows = [line for line in data.decode("utf-8-sig").splitlines() if line.strip()]
        rows = rows[len(rows) - int(dataset["n_samples"]) :]
        try:
            X = np.loadtxt(rows, delimiter=",", quotechar='"', comments=None, ndmin=2)
        except ValueError:
            X = None
        if X is None or _sha256(X) != dataset["sha256"]:
            raise BadFile(
                f"{path}: the service read {dataset['n_samples']} rows from this CSV that "
                "differ from its last lines as read here; send it as .npy instead"
            )
        return X
    finally:
        if created:
            client.delete_dataset(dataset["id"])


def _sha256(X: np.ndarray) -> str:
    """A dataset's id for ``X``, as the service computes it (``DatasetResource.sha256``)."""
    shape = np.array(X.shape, dtype="<u8").tobytes()
    return hashlib.sha256(shape + np.ascontiguousarray(X, dtype="<f8").tobytes()).hexdigest()


def _output_kind(path: Path, allowed: Sequence[str]) -> str:
    kind = path.suffix.lower().lstrip(".")
    if kind not in allowed:
        raise typer.BadParameter(
            f"{path}: the suffix says the format; use one of {', '.join('.' + a for a in allowed)}",
            param_hint="-o/--output-file",
        )
    return kind


def _write_array(arr: np.ndarray, path: Path | None) -> None:
    """``arr`` as CSV (stdout or a .csv file) or ``.npy``; floats keep every digit."""
    fmt = "%d" if arr.dtype.kind in "iub" else "%.17g"
    if path is not None and _output_kind(path, ("csv", "npy")) == "npy":
        np.save(path, arr, allow_pickle=False)
        return
    buf = io.StringIO()
    np.savetxt(buf, arr.reshape(len(arr), -1), fmt=fmt, delimiter=",")
    if path is None:
        sys.stdout.write(buf.getvalue())
    else:
        path.write_text(buf.getvalue())


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


# -- models by id or name ---------------------------------------------------------


def resolve_model(client: Client, ref: str) -> str:
    """A model id for ``ref``: an id as it is, a name as the newest model with it."""
    if MODEL_ID.fullmatch(ref):
        return ref
    for model in client.iter_models():  # newest first
        if model.get("name") == ref:
            return str(model["id"])
    raise NotFound(
        {"title": "Not found", "detail": f"No model with id or name {ref!r}.", "status": 404}, 404
    )


# -- jobs ------------------------------------------------------------------------


class _Watch:
    """Follows one job for ``Client``: remembers it (so that Ctrl-C can cancel it) and
    draws a bar on stderr unless told not to."""

    def __init__(self, *, bar: bool) -> None:
        self.job: JSON | None = None
        #: A Ctrl-C came while the job was being created: raised once it is known.
        self.interrupted = False
        self._want_bar = bar
        self._bar: Any = None

    def __call__(self, job: JSON) -> None:
        known = self.job is not None
        self.job = job
        if self.interrupted and not known:
            raise KeyboardInterrupt
        if self._want_bar:
            if self._bar is None:
                from gmm_client.progress import JobBar

                self._bar = JobBar(console=_stderr())
            self._bar.update(job)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def _ctrl_c_waits_for_the_job(watch: _Watch) -> Iterator[None]:
    """Until the job is known, Ctrl-C is noted instead of raised.

    The service creates the job before its answer names it: a KeyboardInterrupt in
    between would leave a job running that nobody can cancel. So a first Ctrl-C waits
    for the answer (``_Watch`` raises it then, and the job is cancelled); a second one
    interrupts at once. SIGINT left ignored (a command started in the background) or
    handled by the caller stays as it is."""
    usable = threading.current_thread() is threading.main_thread()
    if not usable or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if watch.job is None and not watch.interrupted:
            watch.interrupted = True
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if watch.interrupted and watch.job is None:  # answered without a job to cancel
        raise KeyboardInterrupt


@contextmanager
def _job(client: Client, *, progress: bool) -> Iterator[_Watch]:
    """Run a job-following call; Ctrl-C cancels the job on the service, says so and
    exits 130, rather than leaving a fit running that nobody will read."""
    watch = _Watch(bar=progress)
    try:
        with _ctrl_c_waits_for_the_job(watch):
            yield watch
    except KeyboardInterrupt:
        watch.close()
        job = watch.job
        if job is None or job.get("status") in ("succeeded", "failed", "cancelled"):
            _fail("interrupted", EXIT_INTERRUPTED)
        try:
            client.cancel_job(job["id"])
        except (ProblemError, httpx.HTTPError) as err:
            _fail(f"interrupted; cancelling job {job['id']} failed: {err}", EXIT_INTERRUPTED)
        _fail(f"interrupted: cancelled job {job['id']}", EXIT_INTERRUPTED)
    finally:
        watch.close()


# -- tables ------------------------------------------------------------------------


def _num(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _vector(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _model_tables(model: JSON) -> list[Table]:
    """A summary (one row a fact) and the components (weight and mean of each)."""
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows: list[tuple[str, Any]] = [
        ("model id", model["id"]),
        ("name", model.get("name")),
        ("algorithm", model["algorithm"]),
        ("n_samples", model.get("n_samples")),
        ("n_features", model.get("n_features")),
        ("components", model.get("n_components")),
    ]
    if model["algorithm"] in MIXTURES:
        rows += [
            ("covariance type", model.get("covariance_type")),
            ("converged", model.get("converged")),
            ("n_iter", model.get("n_iter")),
            ("lower bound", model.get("lower_bound")),
        ]
        if "bic" in model:
            rows += [("BIC", model.get("bic")), ("AIC", model.get("aic"))]
    else:
        rows += [("n_iter", model.get("n_iter")), ("inertia", model.get("inertia"))]
    rows += [("fit seconds", model.get("fit_seconds")), ("created", model.get("created_at"))]
    for key, value in rows:
        summary.add_row(key, _num(value))
    for warning in model.get("warnings") or []:
        summary.add_row("warning", str(warning.get("message", warning)))

    components = Table(title="components")
    components.add_column("#", justify="right")
    weights = model.get("weights")
    if weights is not None:
        components.add_column("weight", justify="right")
    components.add_column("mean")
    for i, mean in enumerate(model.get("means") or []):
        cells = [str(i)]
        if weights is not None:
            cells.append(f"{weights[i]:.4f}")
        cells.append(_vector(mean))
        components.add_row(*cells)
    return [summary, components]


def _show_model(state: State, model: JSON) -> None:
    if state.json:
        _print_json(model)
        return
    console = _stdout()
    for table in _model_tables(model):
        console.print(table)


# -- commands -----------------------------------------------------------------------


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"{text!r} is not key=value", param_hint="--param")
    try:
        value = json.loads(raw)  # numbers, true/false, null, lists...
    except json.JSONDecodeError:
        value = raw  # ... and anything else is a string: init=random
    return key.strip(), value


DataArg = Annotated[
    str, typer.Argument(help="Points: a .npy file, a CSV file, or - for CSV on stdin.")
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help=escape("Whether the CSV's first row is a header [default: the service detects it]."),
        show_default=False,
    ),
]
ModelArg = Annotated[str, typer.Argument(help="A model id, or a name (the newest model with it).")]


@app.command()
def fit(
    ctx: typer.Context,
    data: DataArg,
    k: Annotated[
        int | None,
        typer.Option("--k", help="n_components (mixtures) or n_clusters (k-means).", min=1),
    ] = None,
    algorithm: Annotated[str, typer.Option(help="|".join(ALGORITHMS))] = "gaussian_mixture",
    covariance_type: Annotated[
        str | None, typer.Option(help="full|tied|diag|spherical (mixtures).")
    ] = None,
    n_init: Annotated[int | None, typer.Option(help="Initialisations; the best is kept.")] = None,
    random_state: Annotated[int | None, typer.Option(help="Seed, for a repeatable fit.")] = None,
    max_iter: Annotated[int | None, typer.Option(help="Iteration limit.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Any other estimator parameter, key=value (value as JSON)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name to find the model by.")] = None,
    header: HeaderOpt = None,
    progress: Annotated[bool, typer.Option(help="Show the job's progress on stderr.")] = True,
) -> None:
    """Upload DATA as a dataset and fit a model on it, as a job with a progress bar."""
    state = _state(ctx)
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise typer.BadParameter(f"{algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    params: JSON = {}
    size_key = "n_components" if algorithm in MIXTURES else "n_clusters"
    for key, value in (
        (size_key, k),
        ("covariance_type", covariance_type),
        ("n_init", n_init),
        ("random_state", random_state),
        ("max_iter", max_iter),
    ):
        if value is not None:
            params[key] = value
    params.update(_param(p) for p in param or [])
    client = state.client
    dataset = upload_points(client, data, header=header)
    with _job(client, progress=progress) as watch:
        model = client.create_model(algorithm, dataset, params, name=name, progress=watch)
    _show_model(state, model)


@app.command()
def predict(
    ctx: typer.Context,
    model: ModelArg,
    points: Annotated[str, typer.Argument(help="A .npy or CSV file, or - for CSV on stdin.")],
    output_file: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output-file", help=escape("Write .csv or .npy here [default: stdout CSV].")
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", help="labels|probabilities (mixtures)|distances (k-means).")
    ] = "labels",
    header: HeaderOpt = None,
) -> None:
    """Labels (or probabilities, or distances) of POINTS under MODEL."""
    state = _state(ctx)
    if output not in ("labels", "probabilities", "distances"):
        raise typer.BadParameter(f"{output!r} is not labels, probabilities or distances")
    if output_file is not None:
        _output_kind(output_file, ("csv", "npy"))  # before the work, not after
    client = state.client
    model_id = resolve_model(client, model)
    X = read_points(client, points, header=header)
    result = client.predict_npy(model_id, X, output)
    if state.json and output_file is None:
        _print_json({"model_id": model_id, output: result})
        return
    _write_array(result, output_file)


@models_app.command("ls")
def models_ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
) -> None:
    """The models, newest first."""
    state = _state(ctx)
    items = state.client.list_models(limit=limit)["items"]
    if state.json:
        _print_json(items)
        return
    table = Table()
    for column in ("id", "name", "algorithm", "k", "n_samples", "created"):
        table.add_column(column, justify="right" if column in ("k", "n_samples") else "left")
    for m in items:
        table.add_row(
            m["id"],
            m.get("name") or "",
            m["algorithm"],
            _num(m.get("n_components")),
            _num(m.get("n_samples")),
            str(m.get("created_at", "")),
        )
    _stdout().print(table)


@models_app.command("show")
def models_show(ctx: typer.Context, model: ModelArg) -> None:
    """A model's details: fit statistics and each component's weight and mean."""
    state = _state(ctx)
    client = state.client
    _show_model(state, client.get_model(resolve_model(client, model)))


@models_app.command("rm")
def models_rm(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="Model ids or names.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete models (asks first, unless --yes)."""
    state = _state(ctx)
    client = state.client
    ids = [resolve_model(client, ref) for ref in models]
    if not yes and not typer.confirm(f"Delete {len(ids)} model(s): {', '.join(ids)}?"):
        _fail("nothing deleted", 1)
    for model_id in ids:
        client.delete_model(model_id)
    if state.json:
        _print_json({"deleted": ids})
    else:
        for model_id in ids:
            typer.echo(f"deleted {model_id}")


@models_app.command("export")
def models_export(
    ctx: typer.Context,
    model: ModelArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="json: a portable document, for `gmm import`. onnx: an ONNX model, for "
            "onnxruntime (the server needs its onnx extra).",
        ),
    ] = "json",
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output-file", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write MODEL as a portable JSON document or as an ONNX model."""
    state = _state(ctx)
    if fmt not in ("json", "onnx"):
        raise typer.BadParameter(f"{fmt!r} is not json or onnx", param_hint="--format")
    if fmt == "onnx" and output_file is None and sys.stdout.isatty():
        # Before any request: binary on a terminal is noise, and can upset it.
        raise typer.BadParameter(
            "ONNX is binary: give -o model.onnx, or redirect stdout", param_hint="-o/--output-file"
        )
    client = state.client
    model_id = resolve_model(client, model)
    if fmt == "onnx":
        content = client.export_onnx(model_id)
    else:  # what `gmm export` writes
        content = (json.dumps(client.export_model(model_id), indent=2) + "\n").encode()
    if output_file is None:
        stdout = typer.get_binary_stream("stdout")
        stdout.write(content)
        stdout.flush()
        return
    try:
        output_file.write_bytes(content)
    except OSError as exc:
        raise BadFile(f"{output_file}: cannot write: {exc}") from None
    if state.json:
        _print_json(
            {"model_id": model_id, "format": fmt, "path": str(output_file), "bytes": len(content)}
        )
    else:
        typer.echo(f"wrote {output_file} ({len(content)} bytes)")


def parse_k(text: str) -> list[int] | dict[str, int]:
    """``1..10`` (a range, both ends included), ``2,4,8`` (a list) or ``4``."""
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
            return {"min": low, "max": high}
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a range (1..10) nor a list (2,4,8)", param_hint="--k"
        ) from None


@app.command()
def select(
    ctx: typer.Context,
    data: DataArg,
    k: Annotated[str, typer.Option("--k", help="n_components: a range 1..10 or a list 2,4,8.")],
    covariance_type: Annotated[
        str | None, typer.Option(help="Comma-separated: full,tied,diag,spherical.")
    ] = None,
    criterion: Annotated[str, typer.Option(help="bic|aic: lower is better.")] = "bic",
    random_state: Annotated[int | None, typer.Option(help="Seed of every cell's fit.")] = None,
    n_init: Annotated[int | None, typer.Option(help="Initialisations per cell.")] = None,
    header: HeaderOpt = None,
    progress: Annotated[bool, typer.Option(help="Show the job's progress on stderr.")] = True,
) -> None:
    """Fit a Gaussian mixture for every k (and covariance type); mark the best."""
    state = _state(ctx)
    if criterion not in ("bic", "aic"):
        raise typer.BadParameter(f"{criterion!r} is not bic or aic", param_hint="--criterion")
    grid = parse_k(k)
    types = [t.strip() for t in covariance_type.split(",")] if covariance_type else None
    params = {
        key: value
        for key, value in (("random_state", random_state), ("n_init", n_init))
        if value is not None
    }
    client = state.client
    dataset = upload_points(client, data, header=header)
    with _job(client, progress=progress) as watch:
        result = client.select_model(
            dataset,
            grid,
            covariance_type=types,
            criterion=criterion,
            params=params or None,
            progress=watch,
        )
    if state.json:
        _print_json(result)
        return
    best = result.get("best") or {}
    table = Table(title=f"model selection by {criterion.upper()} (lower is better)")
    for column in ("", "k", "covariance", "BIC", "AIC", "converged", "n_iter"):
        table.add_column(column, justify="left" if column in ("", "covariance") else "right")
    for cell in result["scores"]:
        is_best = (cell["n_components"], cell["covariance_type"]) == (
            best.get("n_components"),
            best.get("covariance_type"),
        )
        table.add_row(
            "*" if is_best else "",
            str(cell["n_components"]),
            cell["covariance_type"],
            _num(cell.get("bic"), 8),
            _num(cell.get("aic"), 8),
            _num(cell.get("converged")),
            _num(cell.get("n_iter")) if not cell.get("error") else "error",
            style="bold green" if is_best else None,
        )
    console = _stdout()
    console.print(table)
    if best:
        console.print(
            f"best: k={best['n_components']} covariance_type={best['covariance_type']} "
            f"({criterion.upper()} {_num(best.get(criterion), 8)})"
        )


@app.command()
def plot(
    ctx: typer.Context,
    model: ModelArg,
    output_file: Annotated[
        Path, typer.Option("-o", "--output-file", help="model.png or model.svg: the suffix says.")
    ],
    kind: Annotated[str, typer.Option(help="model (points, ellipses) or convergence.")] = "model",
    width: Annotated[int | None, typer.Option(help="Pixels.")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels.")] = None,
) -> None:
    """Draw MODEL (its points, means and ellipses, or its convergence) to a PNG or SVG."""
    state = _state(ctx)
    fmt = _output_kind(output_file, ("png", "svg"))
    client = state.client
    model_id = resolve_model(client, model)
    image = client.plot_model(model_id, format=fmt, kind=kind, width=width, height=height)  # type: ignore[arg-type]
    output_file.write_bytes(image)
    if state.json:
        _print_json({"model_id": model_id, "path": str(output_file), "bytes": len(image)})
    else:
        typer.echo(f"wrote {output_file} ({len(image)} bytes)")


@app.command("export")
def export_(
    ctx: typer.Context,
    model: ModelArg,
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output-file", help=escape("[default: stdout]"))
    ] = None,
) -> None:
    """Write MODEL as a portable JSON document (no pickle), for `gmm import`."""
    state = _state(ctx)
    client = state.client
    document = client.export_model(resolve_model(client, model))
    text = json.dumps(document, indent=2)
    if output_file is None:
        typer.echo(text)
    else:
        output_file.write_text(text + "\n")


@app.command("import")
def import_(
    ctx: typer.Context,
    document: Annotated[str, typer.Argument(help="An exported model's JSON file, or -.")],
) -> None:
    """Store a model from an exported document; prints the new model's id."""
    state = _state(ctx)
    try:
        text = sys.stdin.read() if document == "-" else Path(document).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFile(f"{document}: cannot read: {exc}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadFile(f"{document}: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadFile(f"{document}: not an exported model (a JSON object)")
    model = state.client.import_model(body)
    if state.json:
        _print_json(model)
    else:
        typer.echo(model["id"])


@datasets_app.command("ls")
def datasets_ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 50,
) -> None:
    """The stored datasets."""
    state = _state(ctx)
    items = state.client.list_datasets(limit=limit)["items"]
    if state.json:
        _print_json(items)
        return
    table = Table()
    for column in ("id", "name", "n_samples", "n_features", "created"):
        table.add_column(column)
    for d in items:
        table.add_row(
            d["id"],
            d.get("name") or "",
            _num(d.get("n_samples")),
            _num(d.get("n_features")),
            str(d.get("created_at", "")),
        )
    _stdout().print(table)


@datasets_app.command("rm")
def datasets_rm(
    ctx: typer.Context,
    datasets: Annotated[list[str], typer.Argument(help="Dataset ids.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete datasets (asks first, unless --yes)."""
    state = _state(ctx)
    if not yes and not typer.confirm(f"Delete {len(datasets)} dataset(s)?"):
        _fail("nothing deleted", 1)
    for dataset_id in datasets:
        state.client.delete_dataset(dataset_id)
    if state.json:
        _print_json({"deleted": datasets})
    else:
        for dataset_id in datasets:
            typer.echo(f"deleted {dataset_id}")


def main(argv: Sequence[str] | None = None) -> None:
    """The ``gmm`` console script."""
    app(args=list(argv) if argv is not None else None, prog_name="gmm")


if __name__ == "__main__":
    main()

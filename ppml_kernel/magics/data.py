"""``%ppml load``, ``%ppml save``, ``%%ppml sql`` and ``%ppml keys``: encrypted data in Spark.

Datasets are decrypted only inside the Spark executors (enclaves); the kernel shows
schemas, results and key ids, never keys. Row caps are always stated under a table.
"""

from __future__ import annotations

import argparse
import os
import re
from html import escape
from typing import Any

from ppml_kernel.magics.errors import MagicError, user_errors
from ppml_kernel.magics.registry import MagicContext, Subcommand
from ppml_kernel.magics.secret import Note

DEFAULT_ROWS = 100
DEFAULT_OUTPUT_ROWS = 100_000
_IDENT = re.compile(r"[^0-9A-Za-z_]")


def _spark() -> Any:
    from ppml_kernel.spark.session import get_or_create_session

    return get_or_create_session()


def _name_from_path(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".ppml", ".csv", ".json", ".jsonl", ".txt", ".parquet"):
        base = base.removesuffix(suffix)
    name = _IDENT.sub("_", base) or "data"
    return name if not name[0].isdigit() else f"t_{name}"


def _options(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MagicError(f"--option expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


class SchemaSummary:
    """What ``%ppml load`` shows: names, types and where the data came from."""

    def __init__(self, title: str, fields: list[tuple[str, str]], notes: list[str]) -> None:
        self.title = title
        self.fields = fields
        self.notes = notes

    def __repr__(self) -> str:
        lines = [self.title, *[f"  {n}: {t}" for n, t in self.fields], *self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td><code>{escape(n)}</code></td><td>{escape(t)}</td></tr>"
                       for n, t in self.fields)
        notes = "".join(f"<p style='margin:2px 0'>{escape(n)}</p>" for n in self.notes)
        return (f"<div class='ppml-load'><p><b>{escape(self.title)}</b></p>"
                f"<table><thead><tr><th>column</th><th>type</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>{notes}</div>")


class ResultTable:
    """A query result as an HTML table, with the row cap stated under it."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], capped: bool,
                 cap: int, bound: str | None) -> None:
        self.columns = columns
        self.rows = rows
        self.capped = capped
        self.cap = cap
        self.bound = bound

    def note(self) -> str:
        n = len(self.rows)
        if self.capped:
            text = (f"Showing the first {n} rows: the result has more (row cap {self.cap}; "
                    "change it with --limit N).")
        else:
            text = f"{n} row{'s' if n != 1 else ''}."
        if self.bound:
            text += f" Bound to {self.bound} (pandas)."
        return text

    def __repr__(self) -> str:
        width = [max([len(c)] + [len(_cell(r[i])) for r in self.rows]) for i, c in
                 enumerate(self.columns)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(self.columns, width, strict=True))]
        lines += [" | ".join(_cell(v).ljust(w) for v, w in zip(r, width, strict=True))
                  for r in self.rows]
        return "\n".join([*lines, self.note()])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in r) + "</tr>"
                       for r in self.rows)
        style = "color:#8a4b00;font-weight:bold" if self.capped else "color:#555"
        return (f"<table class='ppml-sql'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                f"</table><p class='ppml-rowcap' style='{style}'>{escape(self.note())}</p>")


def _cell(v: Any) -> str:
    return "null" if v is None else str(v)


# --------------------------------------------------------------------------- load


def _configure_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="encrypted file or directory (a dataset, or "
                   "a model saved with %%ppml save)")
    p.add_argument("--format", choices=["csv", "json", "text", "parquet"],
                   help="file format (default: from the file names)")
    p.add_argument("--key", metavar="NAME", help="require files encrypted for this key id")
    p.add_argument("--as", dest="view", metavar="VIEW",
                   help="name of the DataFrame variable and SQL view (default: from PATH)")
    p.add_argument("--schema", metavar="DDL", help='e.g. "id long, name string" (default: infer)')
    p.add_argument("--header", action="store_true", help="CSV files start with a header line")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="reader option (sep, nullValue, timezone, splitBytes, ...)")


def _missing_key_check(path: str, required: str | None) -> None:
    """Name the key id a dataset needs and how to provide it, before Spark starts."""
    from ppml_kernel.data import sparkio
    from ppml_kernel.data.errors import DatasetError
    from ppml_kernel.data.files import list_files
    from ppml_kernel.keys.store import default_provider

    files = list_files(path)
    ids = sparkio.key_ids_of(files)
    if required is not None:
        sparkio.check_key(ids, required)
    pme = [f for f in files if f not in ids]  # Parquet Modular Encryption: ids in the footer
    if pme:
        from ppml_kernel.data.parquet import pme_key_id

        for f in pme:
            kid = ids[f] = pme_key_id(f)
            if required is not None and kid != required:
                raise DatasetError(f"{f} is encrypted for key id {kid!r}, not {required!r}")
    available = set(default_provider().key_ids())
    for f, kid in ids.items():
        if kid not in available:
            raise MagicError(
                f"{f} is encrypted for key id {kid!r}, which this kernel does not have. "
                f"Send it with %ppml secret {kid} (the key file's content), or in "
                "simulation load the key file with %ppml keys import KEYFILE.")


def _run_load(ctx: MagicContext, args: argparse.Namespace) -> object:
    from ppml_kernel.data import sparkio

    name = args.view or _name_from_path(args.path)
    if not name.isidentifier():
        raise MagicError(f"--as {name!r} is not a valid Python identifier / view name")
    from ppml_kernel.data.models import is_model_dir

    if is_model_dir(args.path):
        return _load_model(ctx, args, name)
    options = _options(args.option)
    if args.header:
        options["header"] = "true"
    _missing_key_check(args.path, args.key)  # seconds before a JVM would start
    spark = _spark()
    df = sparkio.read(spark, args.path, args.format, args.schema, key=args.key, **options)
    df.createOrReplaceTempView(name)
    ctx.shell.user_ns[name] = df
    fields = [(f.name, f.dataType.simpleString()) for f in df.schema.fields]
    notes = [f"DataFrame variable {name} and SQL view {name}; decrypted only on the "
             "Spark executors, column by column as queries need them."]
    return SchemaSummary(f"Loaded {args.path}", fields, notes)


# --------------------------------------------------------------------------- save


def _configure_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("df", metavar="DF", help="name of a Spark (or pandas) DataFrame variable, "
                   "or of a fitted model (Spark ML or scikit-learn)")
    p.add_argument("path", metavar="PATH", help="output directory")
    p.add_argument("--key", metavar="NAME", help="key id to encrypt under (default: the only "
                   "loaded key)")
    p.add_argument("--format", default="parquet", choices=["csv", "json", "text", "parquet"],
                   help="parquet (Parquet Modular Encryption, default) or csv/json/text; "
                   "for a model: parquet = PME data files, others = every file ppml-aead")
    p.add_argument("--mode", default="errorifexists",
                   choices=["errorifexists", "overwrite", "append", "ignore"])
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="writer option")


def _default_key(requested: str | None) -> str:
    if requested:
        return requested
    from ppml_kernel.keys.store import default_provider

    ids = default_provider().key_ids()
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise MagicError("no dataset key is loaded: send it with %ppml secret KEY_ID (the "
                         "key file's content), or %ppml keys import KEYFILE in simulation")
    raise MagicError(f"several keys are loaded ({', '.join(ids)}): choose one with --key")


def _run_save(ctx: MagicContext, args: argparse.Namespace) -> object:
    from ppml_kernel.data import sparkio

    if args.df not in ctx.shell.user_ns:
        raise MagicError(f"no variable named {args.df!r}")
    df = ctx.shell.user_ns[args.df]
    spark = _spark()
    if not hasattr(df, "sparkSession") and _is_model(df):
        return _save_model(df, args)
    if not hasattr(df, "sparkSession"):
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is a dependency
            pd = None
        if pd is None or not isinstance(df, pd.DataFrame):
            raise MagicError(f"{args.df!r} is not a Spark or pandas DataFrame")
        df = spark.createDataFrame(df)
    key = _default_key(args.key)
    from ppml_kernel.keys.store import default_provider

    if key not in default_provider().key_ids():
        raise MagicError(f"no key with id {key!r} is loaded: send it with %ppml secret {key} "
                         "(the key file's content), or %ppml keys import KEYFILE in simulation")
    sparkio.write(df, args.path, key, args.format, args.mode, **_options(args.option))
    return SchemaSummary(
        f"Saved {args.df} to {args.path}",
        [(f.name, f.dataType.simpleString()) for f in df.schema.fields],
        [f"Encrypted ({args.format}) under key id {key!r}."],
    )


# --------------------------------------------------------------------------- models


def _is_model(obj: object) -> bool:
    """A fitted Spark ML model/pipeline or a scikit-learn estimator (not a DataFrame)."""
    if hasattr(obj, "write") and hasattr(obj, "uid"):
        return True
    return type(obj).__module__.split(".")[0] == "sklearn"


def _save_model(model: Any, args: argparse.Namespace) -> object:
    """``%ppml save MODEL PATH``: see :func:`ppml_kernel.data.models.save_model`."""
    from ppml_kernel.data.errors import DatasetError
    from ppml_kernel.data.models import save_model

    if args.mode not in ("errorifexists", "overwrite"):
        raise MagicError("a model is saved whole: --mode errorifexists or overwrite")
    key = _default_key(args.key)
    fmt = "pme" if args.format == "parquet" else "aead"
    with user_errors(DatasetError):
        save_model(model, args.path, key, format=fmt, overwrite=args.mode == "overwrite")
    return SchemaSummary(f"Saved model {args.df} to {args.path}",
                         [("class", type(model).__name__)],
                         [f"Every file encrypted under key id {key!r}; tamper-evident as a "
                          "whole (manifest of hashes)."])


def _load_model(ctx: MagicContext, args: argparse.Namespace, name: str) -> object:
    """``%ppml load MODEL_DIR --as NAME``: bind the model saved there to ``NAME``."""
    from ppml_kernel.data.errors import DatasetError
    from ppml_kernel.data.models import load_model

    if args.format or args.schema or args.header or args.option:
        raise MagicError(f"{args.path} is a saved model: only --key and --as apply")
    _spark()
    with user_errors(DatasetError):
        model = load_model(args.path, args.key)
    ctx.shell.user_ns[name] = model
    stages = [type(s).__name__ for s in getattr(model, "stages", [])]
    fields = [("class", type(model).__name__)] + ([("stages", " -> ".join(stages))]
                                                  if stages else [])
    return SchemaSummary(f"Loaded model {args.path}", fields,
                         [f"Model variable `{name}`; every file checked against the "
                          "model's encrypted manifest."])


# --------------------------------------------------------------------------- sql


def _configure_sql(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="NAME",
                   help="also bind the result to NAME as a pandas DataFrame")
    p.add_argument("--limit", type=int, default=DEFAULT_ROWS, metavar="N",
                   help=f"rows to show (default {DEFAULT_ROWS})")
    p.add_argument("--maxrows", type=int, default=DEFAULT_OUTPUT_ROWS, metavar="N",
                   help=f"row cap for -o (default {DEFAULT_OUTPUT_ROWS})")
    p.add_argument("--chart", choices=["bar", "line"],
                   help="also draw the shown rows: first column on x, numeric columns on y")


def _run_sql(ctx: MagicContext, args: argparse.Namespace) -> object:
    query = (ctx.cell or "").strip()
    if not query:
        raise MagicError("the cell is empty: write a SQL query under %%ppml sql")
    if args.limit < 0 or args.maxrows < 0:
        raise MagicError("--limit and --maxrows must not be negative")
    spark = _spark()
    df = spark.sql(query)
    shown = df.limit(args.limit + 1).collect()
    capped = len(shown) > args.limit
    rows = [tuple(r) for r in shown[: args.limit]]
    bound = None
    if args.output:
        if not args.output.isidentifier():
            raise MagicError(f"-o {args.output!r} is not a valid Python identifier")
        pdf = df.limit(args.maxrows + 1).toPandas()
        if len(pdf) > args.maxrows:
            pdf = pdf.iloc[: args.maxrows]
            ctx.display(Note(f"Note: {args.output} holds only the first {args.maxrows} "
                             "rows (--maxrows).", "warn"))
        ctx.shell.user_ns[args.output] = pdf
        bound = args.output
    table = ResultTable(df.columns, rows, capped, args.limit, bound)
    if args.chart:
        image = chart(df.columns, rows, args.chart)  # may refuse: then only the error shows
        ctx.display(table)
        return image
    return table


def chart(columns: list[str], rows: list[tuple[Any, ...]], kind: str) -> object:
    """A quick matplotlib chart of a result: x = first column, y = its numeric columns."""
    import numbers

    from IPython.display import Image
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays as it is

    def is_number(v: Any) -> bool:
        return v is None or (isinstance(v, numbers.Number) and not isinstance(v, bool))

    numeric = [i for i in range(1, len(columns))
               if all(is_number(r[i]) for r in rows) and any(r[i] is not None for r in rows)]
    if not rows:
        raise MagicError("--chart: the query returned no rows")
    if not numeric:
        raise MagicError("--chart needs at least one numeric column after the first "
                         f"(got {', '.join(columns)})")
    xs = [_cell(r[0]) for r in rows]
    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.subplots()
    width = 0.8 / len(numeric)
    for n, i in enumerate(numeric):
        ys = [float(r[i]) if r[i] is not None else float("nan") for r in rows]
        if kind == "bar":
            ax.bar([x + n * width for x in range(len(xs))], ys, width=width, label=columns[i])
        else:
            ax.plot(range(len(xs)), ys, marker="o", label=columns[i])
    offset = width * (len(numeric) - 1) / 2 if kind == "bar" else 0
    ax.set_xticks([x + offset for x in range(len(xs))], xs, rotation=45 if len(xs) > 8 else 0,
                  ha="right" if len(xs) > 8 else "center")
    ax.set_xlabel(columns[0])
    if len(numeric) > 1:
        ax.legend()
    else:
        ax.set_ylabel(columns[numeric[0]])
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image(data=buf.getvalue(), format="png")


# --------------------------------------------------------------------------- keys


def _configure_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "import"], default="list")
    p.add_argument("keyfile", nargs="?", metavar="KEYFILE",
                   help="key file to load (simulation and teaching; in production send "
                   "the key with %%ppml secret KEY_ID through the attested browser channel)")


def _run_keys(ctx: MagicContext, args: argparse.Namespace) -> object:
    from ppml_kernel.data.errors import DatasetError
    from ppml_kernel.keys.store import default_provider, default_store, import_key_file
    from ppml_kernel.keys.wrap import key_check_value

    if args.action == "import":
        if not args.keyfile:
            raise MagicError("usage: %ppml keys import KEYFILE")
        with user_errors(DatasetError):
            key_id = import_key_file(args.keyfile)
    ids = default_provider().key_ids()
    store = default_store()
    rows = [(k, key_check_value(store.get(k) or b"\0" * 32).hex()) for k in ids]
    table = ResultTable(["key id", "key check"], rows, False, len(rows), None)
    if args.action == "import":
        ctx.display(Note(f"Loaded key {key_id} into the kernel's memory (never shown or "
                         "stored)."))
    return table


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("load", "Load an encrypted dataset as a Spark DataFrame and SQL view.",
               _configure_load, _run_load),
    Subcommand("save", "Write a DataFrame encrypted (Parquet Modular Encryption by default).",
               _configure_save, _run_save),
    Subcommand("sql", "Run the cell as Spark SQL; HTML table with a stated row cap; -o NAME.",
               _configure_sql, _run_sql, cell=True),
    Subcommand("keys", "List dataset key ids in the kernel (never keys); import a key file.",
               _configure_keys, _run_keys),
]


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext ppml_kernel.magics.data``: add these subcommands to ``%ppml``.

    For kernels where this module is not yet listed in
    ``ppml_kernel.magics.SUBCOMMAND_MODULES`` (a stock IPython kernel, or before the
    lead wires it in); harmless when it already is.
    """
    import ppml_kernel.magics as magics
    from ppml_kernel.magics import ppml as dispatcher

    if __name__ not in magics.SUBCOMMAND_MODULES:
        magics.SUBCOMMAND_MODULES = (*magics.SUBCOMMAND_MODULES, __name__)
    if __name__ not in dispatcher.SUBCOMMAND_MODULES:
        dispatcher.SUBCOMMAND_MODULES = (*dispatcher.SUBCOMMAND_MODULES, __name__)
    if "ppml" not in shell.magics_manager.magics.get("line", {}):
        magics.load_ipython_extension(shell)

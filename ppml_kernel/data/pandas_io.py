"""Small encrypted datasets straight into pandas (no Spark): decrypt, parse, done.

For data that fits in the kernel's memory. Same files, options and keys as the Spark
source; the default provider is the kernel's in-memory secret store.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.files import Segment, list_files
from ppml_kernel.data.format import EncryptedFile
from ppml_kernel.data.tabular import TableSpec, infer_schema, read_segment, resolve_format
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.store import default_provider

if TYPE_CHECKING:
    import pandas as pd


def read_table(path: str | os.PathLike[str] | Iterable[str], format: str | None = None, *,
               schema: pa.Schema | None = None, provider: KeyProvider | None = None,
               **options: Any) -> pa.Table:
    """All records of the encrypted files under ``path`` as one Arrow table."""
    provider = provider or default_provider()
    files = list_files(path)
    fmt = resolve_format(format, files)
    opts = {k.lower(): str(v) for k, v in options.items()}
    tables = []
    if fmt == "parquet":
        from ppml_kernel.data.parquet import EncryptedParquet

        for f in files:
            with EncryptedParquet(f, provider) as ep:
                tables.append(ep.file.read(columns=schema.names if schema else None))
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    for f in files:
        with EncryptedFile(f, provider) as ef:
            if schema is None:
                schema = infer_schema(ef, fmt, opts)
            spec = TableSpec(fmt, schema, opts)
            seg = Segment(f, 0, ef.plaintext_size, ef.plaintext_size)
            tables.append(pa.Table.from_batches(list(read_segment(ef, seg, spec)), schema=schema))
    return pa.concat_tables(tables)


def read_pandas(path: str | os.PathLike[str] | Iterable[str], format: str | None = None, *,
                schema: pa.Schema | None = None, provider: KeyProvider | None = None,
                **options: Any) -> pd.DataFrame:
    """:func:`read_table` as a pandas DataFrame."""
    return read_table(path, format, schema=schema, provider=provider, **options).to_pandas()


def write_pandas(df: pd.DataFrame, path: str | os.PathLike[str], key: str,
                 format: str = "csv", *, provider: KeyProvider | None = None,
                 overwrite: bool = False, **options: Any) -> None:
    """Write ``df`` as one encrypted file (csv/json/text in ppml-aead, or PME Parquet)."""
    from ppml_kernel.data.writers import write_batches

    target = os.fspath(path)
    if os.path.exists(target) and not overwrite:
        raise DatasetError(f"{target} exists (pass overwrite=True to replace it)")
    table = pa.Table.from_pandas(df, preserve_index=False)
    # Named by pid and a random suffix: concurrent writers (other kernels, forked workers)
    # and a temp file left by a crashed one never collide, and no one can plant it ahead.
    tmp = os.path.join(os.path.dirname(target) or ".",
                       f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        write_batches(table.to_batches(), tmp, format, table.schema, provider or
                      default_provider(), key, {k.lower(): str(v) for k, v in options.items()})
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

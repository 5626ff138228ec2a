"""Snakemake glue: safely extract one archive, then write a marker file (see smaf.download)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
import logging
import sys
from pathlib import Path

from smaf.download import safe_extract
from smaf.errors import DownloadError
from smaf.io import atomic_write


def main(smk) -> int:
    """Extract ``snakemake.input.archive`` into ``params.dest``; return the exit status."""
    logging.basicConfig(
        filename=smk.log[0],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        files = safe_extract(
            smk.input.archive,
            smk.params.dest,
            strip_components=int(smk.params.strip_components or 0),
        )
    except DownloadError as exc:
        msg = " ".join(str(exc).split())  # one line, for the log and the terminal alike
        logging.getLogger(__name__).error(msg)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 1
    # The marker is written last (and atomically): its presence means the folder is complete.
    with atomic_write(smk.output.marker) as tmp:
        Path(tmp).write_text(
            f"files: {len(files)}\narchive: {smk.input.archive}\ndest: {smk.params.dest}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 - injected by Snakemake's script directive

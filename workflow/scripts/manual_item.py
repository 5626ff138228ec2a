"""Snakemake glue: check that a hand-downloaded item is in place, then write a marker file.

Items behind a login or on Google Drive (EPS saliency maps, the VOC test set) cannot be
fetched by the workflow; this fails with instructions until the user has put them in place.
"""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
import logging
import sys
from pathlib import Path

from smaf.download import check_manual
from smaf.errors import DownloadError
from smaf.io import atomic_write


def main(smk) -> int:
    """Check ``params.path``; write ``output[0]`` naming it, or fail with the instructions."""
    logging.basicConfig(
        filename=smk.log[0],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        path = check_manual(smk.params.path, smk.params.name, smk.params.instructions)
    except DownloadError as exc:  # ManualDownloadRequired
        msg = " ".join(str(exc).split())  # one line, for the log and the terminal alike
        logging.getLogger(__name__).error(msg)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 1
    logging.getLogger(__name__).info("%s found at %s", smk.params.name, path)
    with atomic_write(smk.output[0]) as tmp:
        Path(tmp).write_text(f"{smk.params.name}: {path.absolute()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 - injected by Snakemake's script directive

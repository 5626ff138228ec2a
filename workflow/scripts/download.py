"""Snakemake glue: download one file, resumably and checksum-verified (see smaf.download)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
import logging
import sys

from smaf.download import download
from smaf.errors import DownloadError


def main(smk) -> int:
    """Run the download described by the ``snakemake`` object; return the exit status."""
    logging.basicConfig(
        filename=smk.log[0],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        download(
            smk.params.url,
            smk.output[0],
            md5=smk.params.md5 or None,  # "" / None in config.yaml mean "no checksum"
            sha256=smk.params.sha256 or None,
            retries=int(smk.params.retries),
            config_key=getattr(smk.params, "key", None),
        )
    except DownloadError as exc:
        msg = " ".join(str(exc).split())  # one line, for the log and the terminal alike
        logging.getLogger(__name__).error(msg)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(snakemake))  # noqa: F821 - injected by Snakemake's script directive

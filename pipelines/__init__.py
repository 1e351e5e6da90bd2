"""memgen's jobs and command line (installed as the package memgen.pipelines)."""

import logging


class _QuietBeamImport(logging.Filter):
    """Beam warns at import time about optional GCP client libraries it does not need here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


# Configured before apache_beam is imported: otherwise logging.warning() at Beam's
# import installs a root handler that prints that line before every command's output.
if not logging.getLogger().handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _handler.addFilter(_QuietBeamImport())
    logging.getLogger().addHandler(_handler)
    logging.getLogger().setLevel(logging.WARNING)

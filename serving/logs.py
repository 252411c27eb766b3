"""Service logs: a refused request is one line, without a traceback and without the values it
carried (they may be e-mail addresses or other personal data); JSON lines on request.

BentoML logs every exception of an endpoint with `logger.error(..., exc_info=True)`, 4xx ones
included: a pydantic ValidationError's text repeats the input. The filter below turns those
records into one INFO line naming the status, the route and, for validation errors, the
fields and error types only. 5xx keep their traceback: they are bugs to fix.

CARTWISE_LOG_FORMAT=json makes every handler write one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import time

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

# The logger BentoML reports endpoint exceptions on (bentoml._internal.server.http_app).
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


def _client_error(exc: BaseException) -> tuple[int, str] | None:
    """(status, a value-free summary) when `exc` is answered with a 4xx, else None."""
    if isinstance(exc, ValidationError):
        fields = sorted(
            {
                ".".join(str(x) for x in e.get("loc", ())) + f" ({e.get('type')})"
                for e in exc.errors()
            }
        )
        return 400, f"{exc.error_count()} validation error(s): " + ", ".join(fields)[:500]
    if isinstance(exc, BentoMLException):
        status = int(exc.error_code.value)
        if 400 <= status < 500:
            return status, type(exc).__name__
    return None


class ClientErrorFilter(logging.Filter):
    """Rewrites a 4xx's error record into one INFO line; leaves everything else alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        summary = _client_error(record.exc_info[1])
        if summary is None:
            return True
        status, what = summary
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "%s %s: %s"
        record.args = (status, path, what)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(log_format: str = "text") -> None:
    """Install the 4xx filter (and JSON output): called in each worker at start."""
    logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())
    if log_format == "json":
        formatter = JsonFormatter()
        for name in (None, "bentoml", "cartwise"):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(formatter)

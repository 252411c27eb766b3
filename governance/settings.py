"""Connections and secrets, read once from the environment (or a `.env` file).

Every program (ingest, feature pipeline, training, serving) takes its connections from here,
so a deployment changes environment variables, never code.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that are fine for demos and tests only; production sets its own (see check_secrets).
DEV_PSEUDONYM_KEY = "cartwise-dev-pseudonym-key"
DEV_EVENTS_TOKEN = "cartwise-dev-token"
DEV_API_KEY = "cartwise-dev-api-key"

log = logging.getLogger(__name__)


class InsecureSettings(RuntimeError):
    """Production mode with a public development secret."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARTWISE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CARTWISE_DATABASE_URL"),
        description="PostgreSQL URL; unset means an embedded PostgreSQL under data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "CARTWISE_REDIS_URL"),
        description="Redis URL for the Feast online store (rediss:// for TLS, user:password@ "
        "for an ACL user, host:port,host:port for cluster seeds); unset means SQLite under "
        "data_dir.",
    )
    redis_cluster: bool = Field(
        default=False, description="The Redis URL names a Redis Cluster (Feast redis_cluster)."
    )
    lake_uri: str | None = Field(
        default=None,
        description="Where clean rows are exported as Parquet for Spark (a folder, s3a://, "
        "hdfs://); unset means data_dir/lake.",
    )
    spark_master: str = Field(
        default="local[*]",
        description="Spark master URL for the Spark feature pipeline and Feast's Spark engines.",
    )
    spark_driver_memory: str | None = Field(
        default="6g",
        description="spark.driver.memory of the SparkSessions cartwise starts (the Spark "
        "pipeline, Feast's Spark offline store and engine); in local mode it is the executors' "
        "heap too. Feast's Spark point-in-time join of 50k ranker_v2 rows took 44 s with 6g "
        "and had not finished after 300 s with 2g (1M events, README). An upper bound, not an "
        "allocation; empty: Spark's default (1g).",
    )
    offline_engine: Literal["postgres", "spark"] = Field(
        default="postgres",
        description="Feast's offline side: 'postgres' (the feature tables in PostgreSQL) or "
        "'spark' (Feast's Spark offline store and compute engine over the lake's feature "
        "tables, written by features.spark_pipeline; run `feast apply` again after switching).",
    )
    data_dir: Path = Field(default=Path("data"), description="Embedded database, reports, models.")
    env: str = Field(
        default="development",
        description="'production' refuses to start with a development key or token.",
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_KEY), description="HMAC key of the user pseudonyms."
    )
    events_token: SecretStr = Field(
        default=SecretStr(DEV_EVENTS_TOKEN), description="Bearer token of POST /events."
    )
    api_key: SecretStr = Field(
        default=SecretStr(DEV_API_KEY),
        description="X-API-Key of the read endpoints (/intent, /search, /recommend, /status).",
    )
    user_token_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret of signed per-user read tokens (serving.user_tokens): when "
        "set, /intent, /search and /recommend also take 'Authorization: Bearer <token>', "
        "for the token's user only; unset, reads take the API key only.",
    )
    # Every PostgreSQL connection gets these (governance.db.connect_options): a dead or stuck
    # database costs a bounded wait, never a hung program. Jobs run long statements; the
    # service lowers statement and lock timeouts for its own connections.
    db_connect_timeout_s: int = Field(default=5, ge=1, description="PostgreSQL connect timeout.")
    db_statement_timeout_s: float = Field(
        default=3600, gt=0, description="PostgreSQL statement_timeout of every connection."
    )
    db_lock_timeout_s: float = Field(
        default=60, gt=0, description="PostgreSQL lock_timeout (advisory locks included)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per log line (the service)."
    )
    serving_runtime: Literal["onnx-int8", "onnx", "torch"] = Field(
        default="onnx-int8",
        description="How the service runs the query encoder and the intent net.",
    )
    serving_statement_timeout_s: float = Field(
        default=10, gt=0, description="statement_timeout of the service's connections."
    )
    serving_lock_timeout_s: float = Field(
        default=2, gt=0, description="lock_timeout of the service's connections (503 after)."
    )
    redis_timeout_s: float = Field(
        default=1.0, gt=0, description="Redis connect and socket timeout of the online store."
    )
    shop_opened_at: datetime = Field(
        default=datetime(2010, 1, 1, tzinfo=UTC),
        description="Events before this instant are impossible and go to quarantine.",
    )
    feast_project: str = "cartwise"

    def development_secrets(self) -> list[str]:
        """Names of the secrets still at their public development value."""
        dev = {
            "CARTWISE_PSEUDONYM_KEY": (self.pseudonym_key, DEV_PSEUDONYM_KEY),
            "CARTWISE_EVENTS_TOKEN": (self.events_token, DEV_EVENTS_TOKEN),
            "CARTWISE_API_KEY": (self.api_key, DEV_API_KEY),
        }
        return [n for n, (value, default) in dev.items() if value.get_secret_value() == default]

    def check_secrets(self, program: str) -> None:
        """Refuse production with a development secret; elsewhere warn once, clearly."""
        weak = self.development_secrets()
        if not weak:
            return
        names = ", ".join(weak)
        if self.env == "production":
            raise InsecureSettings(
                f"{program}: CARTWISE_ENV=production but {names} still have their public "
                "development values; set them to secrets of your own (e.g. `openssl rand -hex "
                "32`) and start again"
            )
        log.warning(
            "%s: %s use public development values; fine for a demo, never for real users "
            "(set them, and CARTWISE_ENV=production to enforce it)",
            program,
            names,
        )

    def lake(self) -> str:
        """The lake's URI: CARTWISE_LAKE_URI, else the folder data_dir/lake."""
        return self.lake_uri or str((self.data_dir / "lake").resolve())

    def lake_features(self) -> str:
        """Where features.spark_pipeline writes the feature tables (Feast's Spark sources)."""
        return f"{self.lake()}/features"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this program, read once. Every program takes its settings from here, so
    this is where production refuses development secrets (and development warns, once)."""
    settings = Settings()
    settings.check_secrets(Path(sys.argv[0]).name or "cartwise")
    return settings

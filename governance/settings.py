"""Connections and secrets, read once from the environment (or a `.env` file).

Every program (ingest, feature pipeline, training, serving) takes its connections from here,
so a deployment changes environment variables, never code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# A key that is fine for demos and tests only; production sets CARTWISE_PSEUDONYM_KEY.
DEV_PSEUDONYM_KEY = "cartwise-dev-pseudonym-key"


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
    offline_engine: Literal["postgres", "spark"] = Field(
        default="postgres",
        description="Feast offline store and materialisation engine: PostgreSQL or Spark.",
    )
    spark_master: str = Field(
        default="local[*]", description="Spark master URL for the Spark offline engine."
    )
    data_dir: Path = Field(default=Path("data"), description="Embedded database, reports, models.")
    pseudonym_key: SecretStr = Field(default=SecretStr(DEV_PSEUDONYM_KEY))
    events_token: SecretStr = Field(default=SecretStr("cartwise-dev-token"))
    shop_opened_at: datetime = Field(
        default=datetime(2010, 1, 1, tzinfo=UTC),
        description="Events before this instant are impossible and go to quarantine.",
    )
    feast_project: str = "cartwise"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""The catalogue's tables: what listing, filtering, counting and sweeping ask of SQL.

Each row keeps the signed document the store used to write as ``meta.json``
(``document``, canonical JSON with its HMAC signature): a row is trusted only once
that signature checks, so write access to the database alone cannot make an
unsigned artifact load. The other columns are copies of fields of the document, for
indexes; they are written in the same transaction as the document and never read
back as the truth.

Alembic owns the schema (``migrations/``): a change here needs a new revision there.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: Models: one row per published model. Ids sort by creation time (``service.ids``),
#: so ``id DESC`` is newest first and the keyset cursor is the last id of a page.
models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(28), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("algorithm", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("artifact_bytes", sa.BigInteger, nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("artifact_signature", sa.String(64), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Index("ix_models_name_id", "name", "id"),
    sa.Index("ix_models_algorithm_id", "algorithm", "id"),
    sa.Index("ix_models_created_at", "created_at"),
    sa.Index("ix_models_expires_at", "expires_at"),
    sa.Index("ix_models_dataset_id", "dataset_id"),
)

#: A model's tags as ``key:value`` strings, one row each: a tag filter is an indexed
#: lookup of the whole string (keys and values may both hold ``:``).
model_tags = sa.Table(
    "model_tags",
    metadata,
    sa.Column(
        "model_id",
        sa.String(28),
        sa.ForeignKey("models.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tag", sa.String(400), primary_key=True),
    sa.Index("ix_model_tags_tag_model", "tag", "model_id"),
)

#: Datasets, content-addressed by the sha256 of their canonical bytes. ``sort_key`` is
#: creation time (ms, 12 hex digits) then id: the listing's order and its cursor.
#: ``file`` names this upload's own data file, so a delete racing a new upload of the
#: same array removes only the file of the row it deleted. ``inline``: a fit stored it
#: from points in its body (nobody uploaded it), so it is deleted once no model and no
#: unfinished job refers to it; an upload of the same array makes it an upload.
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("sort_key", sa.String(76), nullable=False, unique=True),
    sa.Column("n_samples", sa.BigInteger, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    sa.Column("file", sa.String(100), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("inline", sa.Boolean, nullable=False, server_default=sa.false()),
)

#: Jobs (plain JSON: nothing in a job is ever unpickled). ``status``, ``owner`` and
#: ``heartbeat_at`` are copied out so that recovery reads only unfinished jobs;
#: ``dataset_id``, the stored points a job fits, so that they outlive it.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(28), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("owner", sa.String(300), nullable=True),
    sa.Column("heartbeat_at", sa.String(40), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=True),
    sa.Index("ix_jobs_status", "status"),
    sa.Index("ix_jobs_expires_at", "expires_at"),
    sa.Index("ix_jobs_dataset_id", "dataset_id"),
)

#: Idempotency keys of requests that start work: one row per (scope, key), so two
#: replicas racing with the same key insert one row and the loser reads the winner's.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(200), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("request_sha256", sa.String(64), nullable=False),
    sa.Column("resource", sa.String(20), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

#: Facts about the store as a whole (``legacy_import``: when meta.json files of a
#: store written before the database were imported).
store_state = sa.Table(
    "store_state",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

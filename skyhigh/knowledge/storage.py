"""Where the knowledge base lives: a local directory or an S3-compatible object store.

`LANCEDB_URI=s3://bucket/prefix` puts every table under that prefix; AWS S3, MinIO, R2 and
any other store speaking the S3 API work alike (README "Knowledge base on object storage").
The standard AWS settings (`AWS_ENDPOINT` or `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
`AWS_REGION`, the keys or `AWS_PROFILE`) come from `Settings`, so a `.env` file works as well
as the environment, and are handed to LanceDB as its `storage_options`.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from skyhigh.config import KnowledgeSettings
from skyhigh.knowledge.search import KnowledgeBase

# LanceDB's S3 schemes: plain S3 (conditional writes commit) and S3 with a DynamoDB commit lock.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3+ddb"})


def is_object_store(uri: str) -> bool:
    return urlparse(uri).scheme in OBJECT_STORE_SCHEMES


def storage_options(config: KnowledgeSettings) -> dict[str, str]:
    """LanceDB's storage options for `config.lancedb_uri`: empty for a local directory.

    Only what is set is passed; anything left out falls back to LanceDB's own lookup (the
    environment, then the AWS credential chain: profile, web identity, instance role).
    """
    if not is_object_store(config.lancedb_uri):
        return {}
    options: dict[str, str] = {}
    endpoint = config.aws_endpoint or config.aws_endpoint_url
    if endpoint:
        options["aws_endpoint"] = endpoint
    if config.aws_allow_http:
        options["allow_http"] = "true"
    if config.aws_region:
        options["aws_region"] = config.aws_region
    if config.aws_access_key_id:
        options["aws_access_key_id"] = config.aws_access_key_id
    if config.aws_secret_access_key is not None:
        options["aws_secret_access_key"] = config.aws_secret_access_key.get_secret_value()
    if config.aws_session_token is not None:
        options["aws_session_token"] = config.aws_session_token.get_secret_value()
    _use_profile(config.aws_profile)
    return options


def _use_profile(profile: str | None) -> None:
    # LanceDB's AWS credential chain reads the profile only from the environment: it takes no
    # storage option for it (tried: `aws_profile` is ignored). AWS_PROFILE set in `.env` alone
    # reaches Settings but not the environment, so it is exported here.
    if profile and os.environ.get("AWS_PROFILE") != profile:
        os.environ["AWS_PROFILE"] = profile


def open_knowledge_base(config: KnowledgeSettings, *, table: str | None = None) -> KnowledgeBase:
    """The knowledge base `config` names, wherever it lives; `table` overrides the default."""
    return KnowledgeBase(
        config.lancedb_uri,
        default_table=table or config.knowledge_table,
        nprobes=config.vector_nprobes,
        refine_factor=config.vector_refine_factor,
        storage_options=storage_options(config),
    )

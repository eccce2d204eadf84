"""Settings: one pydantic-settings model read from a TOML file and ``APPLIANCE_*`` variables.

Precedence, highest first: explicit arguments, environment (``APPLIANCE_DATA_DIR``,
``APPLIANCE_INGEST__MAX_UPLOAD_MB``, ...), the TOML file named by ``APPLIANCE_CONFIG``,
then the defaults below. Nothing here is read at import time.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from appliance.core.classification import Classification
from appliance.core.errors import UnsafeConfiguration

CONFIG_ENV = "APPLIANCE_CONFIG"
DEFAULT_CONFIG = Path("/etc/appliance/appliance.toml")


class _Section(BaseModel):
    """A settings section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    """How `appliance serve` listens."""

    host: str = Field("127.0.0.1", description="Address to bind. Keep loopback behind the proxy.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    workers_embedded: bool = Field(
        True,
        description="Run the ingestion worker and scheduled jobs inside the serve process.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or networks (127.0.0.1, 10.0.0.0/24) of the reverse proxies whose "
            "X-Forwarded-For and X-Forwarded-Proto headers are believed: only for a request "
            "whose direct peer is one of them does the forwarded address become the client's "
            "(for throttling, sessions and the audit log). Empty believes no one: the peer "
            "is the client. Behind a proxy on this server (the Ansible deployment) list the "
            "address it connects from, 127.0.0.1; any process here can connect from that "
            "address too."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        """Only IP addresses and networks: no host names, no '*' (that would trust anyone)."""
        checked = []
        for value in values:
            try:
                text = value.strip()
                parsed = (
                    ipaddress.ip_network(text, strict=False)
                    if "/" in text
                    else ipaddress.ip_address(text)
                )
                checked.append(str(parsed))
            except ValueError:
                raise ValueError(
                    f"server.trusted_proxies: {value!r} is not an IP address or network. "
                    'List the reverse proxy\'s own address, e.g. "127.0.0.1".'
                ) from None
        return checked

    operator_socket: Path | None = Field(
        None,
        description=(
            "Unix socket on which `appliance serve` answers the operator's `appliance ask` "
            "and `appliance search` while it holds the vector index (mode 0600 in a 0700 "
            "directory: the service account and root only). Empty means "
            "<data_dir>/run/operator.sock; `-` turns it off."
        ),
    )


class DatabaseSettings(_Section):
    """Metadata database."""

    url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL. Empty means SQLite at <data_dir>/appliance.db (WAL mode). "
            "Use postgresql+psycopg://... to scale out."
        ),
    )
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")


class IndexSettings(_Section):
    """Vector index."""

    backend: Literal["edge", "server"] = Field(
        "edge",
        description=(
            "'edge': Qdrant engine in-process (a qdrant-edge shard under <data_dir>/index). "
            "'server': a Qdrant server or cluster through qdrant-client."
        ),
    )
    url: str | None = Field(None, description="Qdrant server URL (backend 'server' only).")
    api_key: SecretStr | None = Field(
        None, description="Qdrant server API key (backend 'server' only)."
    )
    collection: str = Field("chunks", description="Collection name (backend 'server' only).")


class ModelSettings(_Section):
    """Local models. Nothing is ever downloaded; files are checked against their sha256."""

    chat_model: str = Field(
        "smollm2-135m-instruct-q4_1",
        description="Name of the chat model (see `appliance models list`).",
    )
    embedder: str = Field("all-minilm-l6-v2", description="Name of the embedding model.")
    n_ctx: int = Field(4096, ge=512, description="Context window given to llama.cpp, in tokens.")
    n_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads llama.cpp decodes with; empty means half the usable CPUs "
        "(decoding gains nothing from more, and stalls when a core is busy elsewhere).",
    )
    n_threads_batch: int | None = Field(
        None,
        ge=1,
        description="CPU threads llama.cpp reads the prompt with (the wait before the first "
        "word); empty means every usable CPU.",
    )
    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers offloaded to the GPU (-1: all, 0: CPU only)."
    )
    embed_device: str = Field("cpu", description="torch device for the embedder: cpu, cuda.")
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Chunks embedded per batch.")


class IngestSettings(_Section):
    """Document ingestion."""

    max_upload_mb: int = Field(
        200, ge=1, description="Largest file accepted, in MiB; larger files fail with a reason."
    )
    ocr: bool = Field(
        True,
        description="OCR scanned PDFs when Debian's tesseract-ocr is installed.",
    )
    chunk_max_tokens: int = Field(
        200, ge=32, le=250, description="Largest chunk in embedder tokens (the window is 256)."
    )
    chunk_overlap_tokens: int = Field(
        40, ge=0, le=120, description="Tokens repeated from the previous chunk of a section."
    )
    default_classification: Classification = Field(
        Classification.INTERNAL, description="Classification given to a new document."
    )
    poll_seconds: float = Field(
        1.0, gt=0, description="How often the worker looks for queued documents."
    )
    # The limits on reading one file (defaults: ingest.parse.limits.ParseLimits, where the
    # measurements behind them are noted; README "Limits on reading a file").
    parsers: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Parser processes that read files side by side. A slow or hostile file holds one "
            "of them (for at most the limits below) while the others carry on. Each idle "
            "parser holds about 0.15 GiB of its own, beside 0.4 GiB they share."
        ),
    )
    parse_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description=(
            "Wall-clock time one file may take to read, OCR included; then its parser "
            "process is killed and replaced, and the file fails with this reason."
        ),
    )
    parse_cpu_seconds: int = Field(
        120,
        ge=1,
        description=(
            "Processor time one file may use in its parser process (RLIMIT_CPU); a 1000-page "
            "PDF needs about 40 s, a 100,000-row spreadsheet about 20 s."
        ),
    )
    parse_memory_mb: int = Field(
        2048,
        ge=64,
        description=(
            "Memory (address space, RLIMIT_AS) one file may add to its parser process, in "
            "MiB, on top of the idle parser's own (about 0.95 GiB of address space)."
        ),
    )
    max_unpack_ratio: int = Field(
        100,
        ge=1,
        description=(
            "A ZIP-based file (DOCX, PPTX, XLSX, ODT, ODS, ODP, EPUB) may unpack to at most "
            "this many times its own size, or to `unpack_floor_mb` if that is more; beyond "
            "that it is refused as a zip bomb. Real documents unpack to 2-25x, repetitive "
            "ones to about 50x."
        ),
    )
    unpack_floor_mb: int = Field(
        16,
        ge=1,
        description=(
            "What any Office file may unpack to whatever its size, in MiB (small files have a "
            "high ratio from their fixed styles and themes)."
        ),
    )


class ChatSettings(_Section):
    """Questions and answers."""

    top_k: int = Field(
        12,
        ge=1,
        le=50,
        description="Passages shown per question as its evidence (the prompt takes only the "
        "best sentences of them, within `source_tokens`). On the answer benchmark 12 showed "
        "the page that answers in 100% of questions and its key phrase in 86%.",
    )
    candidates: int = Field(
        48,
        ge=1,
        le=200,
        description="Passages taken from the vector search before their sentences are scored "
        "against the question; the best `top_k` of them are shown. The embedder ranks whole "
        "chunks coarsely: on the answer benchmark, 48 candidates put the sentence that answers "
        "among the 12 shown in 86% of questions and 68% of follow-up turns, against 83% and "
        "60% with 12, for some 25 ms more. Fewer than `top_k` counts as `top_k`.",
    )
    min_score: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="Cosine similarity below which a passage is not considered a match.",
    )
    answer_max_tokens: int = Field(
        160,
        ge=16,
        le=4096,
        description="Longest answer, in model tokens (answers are one to three sentences).",
    )
    source_tokens: int = Field(
        450,
        ge=64,
        le=32_000,
        description=(
            "Model tokens of sources in the prompt: the best sentence windows of the top "
            "passages, until this is used. Small models answer best with little, precise "
            "context (bench/answers.py measures it); raise it for larger models."
        ),
    )
    history_tokens: int = Field(
        200,
        ge=0,
        le=32_000,
        description=(
            "Model tokens of earlier turns in the prompt, newest first, so a long "
            "conversation costs what a short one does."
        ),
    )
    repeat_penalty: float = Field(
        1.15,
        ge=1.0,
        le=2.0,
        description="llama.cpp's repetition penalty (1.0 is off); a loop guard ends the rest.",
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    history_turns: int = Field(
        6, ge=0, le=50, description="Recent messages of the conversation given to the model."
    )
    generation_timeout_seconds: float = Field(
        180, gt=0, description="An answer still generating after this long is cut off."
    )
    max_queued_per_user: int = Field(
        3, ge=1, le=50, description="Questions one user may have waiting or running at once."
    )


class JobSettings(_Section):
    """Scheduled jobs run by the serve process."""

    cleanup_interval_seconds: int = Field(
        3600, ge=10, description="How often orphaned index points and temp files are removed."
    )
    retention_interval_seconds: int = Field(
        3600,
        ge=10,
        description=(
            "How often the retention job deletes what its policies say is due "
            "(documents, chat history, expired sessions, old audit entries)."
        ),
    )
    lease_seconds: int = Field(
        300,
        ge=10,
        description=(
            "A job's lease in the database: with several processes only the holder runs the "
            "job; it renews the lease while it works, and a crashed holder's lease expires."
        ),
    )


class RetentionSettings(_Section):
    """Retention policies: how long things are kept (admins can override them in the app).

    Days count from a document's upload, a chat message's time, a session's end and an
    audit entry's time. Empty (or 0) means keep forever.
    """

    public_days: int | None = Field(
        None, ge=0, description="Days a public document is kept; empty keeps it forever."
    )
    internal_days: int | None = Field(
        None, ge=0, description="Days an internal document is kept; empty keeps it forever."
    )
    confidential_days: int | None = Field(
        None, ge=0, description="Days a confidential document is kept; empty keeps it forever."
    )
    personal_days: int | None = Field(
        None, ge=0, description="Days a personal document is kept; empty keeps it forever."
    )
    chat_history_days: int | None = Field(
        None,
        ge=0,
        description=(
            "Days chat messages are kept; older ones, and conversations left empty, are "
            "deleted. Empty keeps chat history forever."
        ),
    )
    session_days: int = Field(
        0,
        ge=0,
        description=(
            "Days an ended (expired) sign-in session's row is kept before the retention job "
            "removes it; 0 removes it at the next run. An ended session never signs anyone in."
        ),
    )
    audit_log_days: int | None = Field(
        2555,
        ge=0,
        description="Days audit entries are kept (2555: about 7 years); empty keeps them forever.",
    )


class AuthSettings(_Section):
    """Sign-in, sessions, second factor, throttling and API tokens."""

    session_idle_minutes: int = Field(
        30, ge=1, description="A session ends after this many minutes without a request."
    )
    session_absolute_hours: int = Field(
        12, ge=1, description="A session ends this many hours after sign-in, however active."
    )
    preauth_minutes: int = Field(
        5,
        ge=1,
        le=60,
        description=(
            "Lifetime of the half-signed-in state (password accepted, second factor, enrolment "
            "or password change pending); it grants nothing else."
        ),
    )
    lockout_threshold: int = Field(
        10,
        ge=1,
        description="Failed passwords, codes or recovery codes before an account is locked.",
    )
    lockout_minutes: int = Field(
        15, ge=1, description="How long a locked account (or client address) stays locked."
    )
    backoff_after: int = Field(
        3, ge=1, description="Failures after which each further attempt must wait (back-off)."
    )
    backoff_base_seconds: float = Field(
        1.0, ge=0, description="First back-off delay; it doubles with each further failure."
    )
    backoff_max_seconds: float = Field(
        60.0, ge=0, description="Longest back-off delay before the lockout takes over."
    )
    client_lockout_threshold: int = Field(
        50,
        ge=1,
        description=(
            "Failures from one client address (any accounts) before that address is locked."
        ),
    )
    totp_drift_steps: int = Field(
        1, ge=0, le=2, description="TOTP time steps (30 s each) accepted either side of now."
    )
    totp_issuer: str = Field(
        "Appliance", min_length=1, description="Issuer name shown in authenticator apps."
    )
    api_token_max_days: int = Field(
        90, ge=1, le=366, description="Longest lifetime of a personal API token, in days."
    )
    cookie_secure: bool = Field(
        True,
        description=(
            "Mark cookies Secure and use the __Host- prefix. Turn off only for plain-HTTP "
            "development; browsers then drop the prefix too."
        ),
    )
    public_origin: str | None = Field(
        None,
        description=(
            "The origin browsers use, e.g. https://appliance.corp.example. Empty means the "
            "origin of each request (scheme and Host, as the reverse proxy forwards them). "
            "State-changing requests from any other Origin are refused."
        ),
    )


class AclSettings(_Section):
    """Document access control and the approval of sensitive self-grants."""

    approval_expiry_hours: int = Field(
        72,
        ge=1,
        le=24 * 30,
        description=(
            "Hours an approval request (an admin granting themselves or their group read on "
            "a confidential or personal document) waits for a second admin before it expires."
        ),
    )
    list_page_size: int = Field(
        100, ge=1, le=1000, description="Most documents one page of GET /api/documents returns."
    )


class ApprovalSettings(_Section):
    """Which consequential admin actions wait for a second admin's approval."""

    required: list[str] = Field(
        default_factory=lambda: [
            "self_grant_confidential",
            "make_admin",
            "lift_legal_hold",
            "bulk_delete",
            "audit_export",
            "shorten_retention",
            "reset_credentials",
            "delete_document",
        ],
        description=(
            "Kinds of action held for a second admin: self_grant_confidential (an admin "
            "giving themselves, or an account whose credentials they set, read on a "
            "confidential or personal document: a grant, a group membership, or documents "
            "transferred at erasure), make_admin, "
            "lift_legal_hold, bulk_delete, audit_export (through the API; the operator's CLI "
            "exports directly), shorten_retention (an admin override that keeps anything, the "
            "audit log included, for less time than before; the operator's CLI sets directly), "
            "reset_credentials (an admin resetting another admin's password or second factor, "
            "or those of an account that reads confidential or personal documents or has chat "
            "history when the reset would let them sign in as it), delete_document (an admin "
            "deleting a confidential or personal document they neither own nor manage by a "
            "grant: one by one, by an earlier retain-until, or by erasing its owner). "
            "Remove a kind to let one admin do it alone (still audited)."
        ),
    )
    expiry_hours: int | None = Field(
        None,
        ge=1,
        le=24 * 30,
        description=(
            "Hours a request waits for a decision (and an approved export stays usable) "
            "before it expires. Empty means acl.approval_expiry_hours."
        ),
    )


class Settings(BaseSettings):
    """Every setting of the appliance."""

    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(
        Path("/var/lib/appliance"),
        description="Data directory: database, encrypted blobs, vector index, models.",
    )
    key_file: Path = Field(
        Path("/etc/appliance/kek"),
        description="Key-encryption key file (0600). Must live outside the data directory.",
    )
    keystore_dir: Path | None = Field(
        None,
        description=(
            "Key store for wrapped data keys, outside the data directory and backed up apart "
            "from it. Empty means '<data_dir>-keys' beside the data directory."
        ),
    )
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    index: IndexSettings = Field(default_factory=IndexSettings)  # type: ignore[arg-type]
    models: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    jobs: JobSettings = Field(default_factory=JobSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]
    chat: ChatSettings = Field(default_factory=ChatSettings)  # type: ignore[arg-type]
    acl: AclSettings = Field(default_factory=AclSettings)  # type: ignore[arg-type]
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)  # type: ignore[arg-type]
    retention: RetentionSettings = Field(default_factory=RetentionSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then environment, then the TOML file."""
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Derived locations -------------------------------------------------------------

    @property
    def keystore_path(self) -> Path:
        """Where wrapped data keys live."""
        if self.keystore_dir is not None:
            return self.keystore_dir
        return self.data_dir.with_name(self.data_dir.name + "-keys")

    @property
    def database_url(self) -> str:
        """The effective SQLAlchemy URL."""
        return self.database.url or f"sqlite:///{self.data_dir / 'appliance.db'}"

    @property
    def operator_socket_path(self) -> Path | None:
        """Where serve listens for the operator's CLI (None: not at all)."""
        configured = self.server.operator_socket
        if configured is not None and str(configured) == "-":
            return None
        return configured or self.data_dir / "run" / "operator.sock"

    @property
    def blob_dir(self) -> Path:
        """Encrypted original files."""
        return self.data_dir / "blobs"

    @property
    def index_dir(self) -> Path:
        """The embedded Qdrant shard."""
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        """Admin-installed model files and the model registry."""
        return self.data_dir / "models"

    @property
    def max_upload_bytes(self) -> int:
        """Upload limit in bytes."""
        return self.ingest.max_upload_mb * 1024 * 1024


def config_path() -> Path | None:
    """The TOML file: ``APPLIANCE_CONFIG``, else /etc/appliance/appliance.toml if present."""
    value = os.environ.get(CONFIG_ENV)
    if value:
        path = Path(value)
        if not path.is_file():
            raise UnsafeConfiguration(
                f"{CONFIG_ENV}={value} does not name a readable file. "
                "Create it (see README, 'Settings') or unset the variable."
            )
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def get_settings(**overrides: Any) -> Settings:
    """Read the effective settings now (never at import time)."""
    return Settings(**overrides)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def check_safety(settings: Settings, *, require_key: bool = True) -> None:
    """Refuse an unsafe layout: keys inside the data dir, a key file others can read."""
    if _is_within(settings.key_file, settings.data_dir):
        raise UnsafeConfiguration(
            f"The key file {settings.key_file} is inside the data directory {settings.data_dir}; "
            "a copy of the data directory would then carry the key that opens it. "
            "Set APPLIANCE_KEY_FILE (or key_file) to a path outside the data directory."
        )
    if _is_within(settings.keystore_path, settings.data_dir):
        raise UnsafeConfiguration(
            f"The key store {settings.keystore_path} is inside the data directory "
            f"{settings.data_dir}. Set keystore_dir to a path outside it."
        )
    if require_key:
        if not settings.key_file.exists():
            raise UnsafeConfiguration(
                f"The key file {settings.key_file} does not exist. Run `appliance init` "
                "to create it, or restore it from your vault."
            )
        mode = stat.S_IMODE(settings.key_file.stat().st_mode)
        if mode & 0o077:
            raise UnsafeConfiguration(
                f"The key file {settings.key_file} is readable by others (mode {mode:o}). "
                f"Fix it with: chmod 600 {settings.key_file}"
            )
    if settings.data_dir.exists() and not os.access(settings.data_dir, os.W_OK | os.X_OK):
        raise UnsafeConfiguration(
            f"The data directory {settings.data_dir} is not writable by this user. "
            f"Fix it with: chown -R $(id -un) {settings.data_dir} (or run as the appliance user)."
        )


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Settings as a plain dict with secrets masked, for `appliance config show`."""
    data = settings.model_dump(mode="json")
    data["effective"] = {
        "config_file": str(config_path()) if config_path() else None,
        "keystore_dir": str(settings.keystore_path),
        "database_url": _mask_url(settings.database_url),
    }
    if data["database"]["url"]:
        data["database"]["url"] = _mask_url(data["database"]["url"])
    if settings.index.api_key is not None:
        data["index"]["api_key"] = "********"
    return data


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown masked entirely
        return "********"

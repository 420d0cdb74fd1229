-- neo-ray's first schema: repositories, their files and import edges, and every job's record.

CREATE TABLE repositories (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_url         text        NOT NULL UNIQUE,
    last_commit_sha  text,
    last_ingested_at timestamptz NOT NULL DEFAULT now(),
    files            integer     NOT NULL DEFAULT 0,
    edges            integer     NOT NULL DEFAULT 0,
    files_skipped    integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingestion_jobs (
    job_id               text PRIMARY KEY,
    repo_url             text             NOT NULL,
    ref                  text,
    status               text             NOT NULL
        CHECK (status IN ('queued', 'running', 'complete', 'failed', 'skipped')),
    commit_sha           text,
    duration_seconds     double precision NOT NULL DEFAULT 0,
    files_processed      integer          NOT NULL DEFAULT 0,
    embeddings_generated integer          NOT NULL DEFAULT 0,
    edges                integer          NOT NULL DEFAULT 0,
    files_skipped        integer          NOT NULL DEFAULT 0,
    error                text,
    reason               text,
    stage_seconds        jsonb            NOT NULL DEFAULT '{}'::jsonb,
    worker_id            text,
    attempts             integer          NOT NULL DEFAULT 0,
    "timestamp"          timestamptz      NOT NULL,
    record               jsonb            NOT NULL
);
CREATE INDEX ingestion_jobs_timestamp ON ingestion_jobs ("timestamp" DESC);
CREATE INDEX ingestion_jobs_repo_timestamp ON ingestion_jobs (repo_url, "timestamp" DESC);

CREATE TABLE files (
    repo_id    bigint  NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path       text    NOT NULL,
    language   text    NOT NULL,
    in_degree  integer NOT NULL DEFAULT 0,
    out_degree integer NOT NULL DEFAULT 0,
    commit_sha text,
    UNIQUE (repo_id, path)
);

-- An edge importer → imported; both ends are files of the same repository, so an edge
-- cannot outlive either file.
CREATE TABLE dependencies (
    repo_id  bigint NOT NULL,
    src_path text   NOT NULL,
    dst_path text   NOT NULL,
    UNIQUE (repo_id, src_path, dst_path),
    FOREIGN KEY (repo_id, src_path) REFERENCES files (repo_id, path) ON DELETE CASCADE,
    FOREIGN KEY (repo_id, dst_path) REFERENCES files (repo_id, path) ON DELETE CASCADE
);
CREATE INDEX dependencies_dst ON dependencies (repo_id, dst_path);

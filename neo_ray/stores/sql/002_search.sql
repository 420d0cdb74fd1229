-- Search and graph queries: the job that produced each repository's current graph.
-- (The walks over `dependencies` use its unique key (repo_id, src_path, dst_path) one way and
-- the index dependencies_dst the other: no new index is needed.)

ALTER TABLE repositories ADD COLUMN last_job_id text;

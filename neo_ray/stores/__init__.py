"""Between the planes: the Redis queue, PostgreSQL metadata, vectors, embedded servers."""

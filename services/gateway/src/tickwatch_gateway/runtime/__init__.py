"""What every feature runs on: settings shared by all, the PostgreSQL pool, Redis (behind a
guard), the Kafka publisher, readiness checks, background tasks, bounded shutdown."""

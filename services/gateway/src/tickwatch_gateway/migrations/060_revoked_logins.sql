-- The logins revoked within the last access-token lifetime are copied into Redis after Redis
-- lost them or missed some (tickwatch_gateway.revocation); this keeps that query small.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;

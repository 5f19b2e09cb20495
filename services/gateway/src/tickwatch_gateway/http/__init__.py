"""The public edge every feature's routes share: middleware (CORS, security headers, request
ids, admission, rate limits), problem+json errors, request parsing, conditional GETs, the API
types of the OpenAPI document and the document itself."""

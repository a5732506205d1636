"""Auth0-protected Flask API: JWT access-token validation with a hardened JWKS cache."""

"""Side-by-side benchmark of the service, the Auth0 Flask quickstart and Auth0's Node middleware."""

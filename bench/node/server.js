// Auth0's Node API pattern (express + express-oauth2-jwt-bearer) for the bench, same routes
// and bodies as the Flask quickstart, run as a node cluster (WORKERS processes, default 2).
// Env: PORT, WORKERS, ISSUER_BASE_URL, AUDIENCE, JWKS_URI (optional: lets the bench issuer
// count this target's JWKS fetches; the key set still comes from the same issuer).
'use strict';

const cluster = require('node:cluster');
const express = require('express');
const cors = require('cors');
const { auth, requiredScopes } = require('express-oauth2-jwt-bearer');

const port = Number(process.env.PORT || 3010);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const app = express();
  // express-level production mode without NODE_ENV=production: the middleware refuses an
  // http:// issuer when NODE_ENV is production, and the bench issuer is local http.
  app.set('env', 'production');
  app.disable('x-powered-by');
  app.use(cors({ origin: 'http://localhost:3000' }));

  const checkJwt = auth({
    issuerBaseURL: process.env.ISSUER_BASE_URL,
    audience: process.env.AUDIENCE,
    jwksUri: process.env.JWKS_URI || undefined,
  });

  app.get('/api/public', (req, res) => {
    res.json({
      message: "Hello from a public endpoint! You don't need to be authenticated to see this.",
    });
  });

  app.get('/api/private', checkJwt, (req, res) => {
    res.json({
      message: 'Hello from a private endpoint! You need to be authenticated to see this.',
    });
  });

  app.get('/api/private-scoped', checkJwt, requiredScopes('read:messages'), (req, res) => {
    res.json({
      message:
        'Hello from a private endpoint! You need to be authenticated and have a scope of ' +
        'read:messages to see this.',
    });
  });

  // Auth0's sample also logs err.stack here; the bench leaves that out so the number is the
  // middleware's, not console I/O's.
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    res
      .set(err.headers || {})
      .status(err.status || 500)
      .json({ error: err.code || 'server_error', error_description: err.message });
  });

  app.listen(port, '127.0.0.1');
}

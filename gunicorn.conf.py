"""gunicorn settings for the API: flat values, each surprising one with its reason.

Precedence: these values < GUNICORN_CMD_ARGS < command-line flags (so --bind/--workers win).
Defaults of the environment variables read here are pinned, with reasons, in service.config.
"""

import atexit
import os
import shutil
import sys
import tempfile

# service.config is stdlib-only: importing it here loads neither Flask nor prometheus_client.
from service.config import ConfigError
from service.config import Settings
from service.config import log_settings
from service.config import metrics_port
from service.config import server_int

# Multiprocess metrics are chosen when prometheus_client is first imported, so the directory must
# be in the environment before any worker loads the app (the Dockerfile and Kubernetes set it;
# this default makes a bare `gunicorn -c gunicorn.conf.py` count correctly too).
_MASTER_PID = os.getpid()
_OWN_METRICS_DIR = os.path.join(tempfile.gettempdir(), f"api-metrics-{_MASTER_PID}")
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR
# Exists before anything loads the app (also for `--check-config`, which skips on_starting).
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def _remove_own_metrics_dir():
    """Remove the metrics directory this process made for itself (never a configured one)."""
    # Workers inherit atexit handlers through fork: only the process that made it removes it.
    if os.getpid() == _MASTER_PID and os.environ.get("PROMETHEUS_MULTIPROC_DIR") == _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)


# Every way out of the master: a clean stop, a failed start (sys.exit), `--check-config`.
atexit.register(_remove_own_metrics_dir)


def _fail(error):
    """Stop start-up with one line naming the setting, not a traceback."""
    print(f"configuration error: {error}", file=sys.stderr, flush=True)
    _remove_own_metrics_dir()
    # os._exit: also from inside the arbiter's hooks, which would otherwise log a traceback.
    os._exit(78)


def _int_env(name, minimum=0):
    """An integer setting, its default pinned in service.config.DEFAULTS."""
    try:
        return server_int(os.environ, name, minimum=minimum)
    except ConfigError as error:
        _fail(error)


wsgi_app = "service.wsgi:app"
bind = [f"0.0.0.0:{_int_env('PORT', 1)}"]
workers = _int_env("WEB_CONCURRENCY", 1)
# gthread: keep-alive without a buffering proxy in front; threads overlap the rare JWKS fetch.
# Our subclass reads request heads on the poller (slow or idle clients hold no thread, within
# GUNICORN_HEADER_TIMEOUT, validated here) and answers what it refuses with JSON.
worker_class = "service.server.worker.Worker"
_int_env("GUNICORN_HEADER_TIMEOUT", 1)
threads = _int_env("GUNICORN_THREADS", 1)
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT")
timeout = 30
keepalive = _int_env("GUNICORN_KEEPALIVE")
# No recycling: nothing here leaks, and every replaced worker costs the master a fold of its
# metric files (child_exit; https://github.com/prometheus/client_python/issues/275).
max_requests = 0
# One header field may hold a token up to 32 KiB ("Authorization: Bearer " included), so a
# token over AUTH0_MAX_TOKEN_BYTES (16 KiB) still reaches the app and gets its RFC 6750 401;
# a longer field gets the worker's JSON 431. The whole head is capped at 64 KiB by the worker
# (service.server.request_head.MAX_HEAD_BYTES), which bounds the parse to one linear pass.
limit_request_field_size = 32768
# Heartbeat files in RAM: works with a read-only root filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn >= 25.1 opens a control socket under $HOME, which is read-only in the container.
control_socket_disable = True
proc_name = "auth0-api"

accesslog = "-"
errorlog = "-"
try:
    loglevel = log_settings(os.environ).level.lower()
except ConfigError as _error:
    _fail(_error)
logger_class = "service.server.gunicorn_logger.GunicornLogger"


def on_starting(server):
    """Fail fast on bad settings, then start the metrics directory empty (master, pre-fork)."""
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        _fail(error)
    if settings.dpop.enabled and not settings.public_urls:
        # Once per start (the master, before any fork), not once per worker. RFC 9449 §4.3
        # step 9 compares htu with the request URI, whose host is then the client's own Host.
        server.log.warning(
            "public_url_unset",
            extra={
                "setting": "PUBLIC_URL",
                "detail": "DPoP proofs are checked against a URL built from the request's Host "
                "header, which the client chooses; set PUBLIC_URL to the URL(s) clients call",
            },
        )
    # Made here, before the fork, so that every worker maps the same DPoP replay table and
    # derives the same server nonces (RFC 9449 §9, §11.1); the workers' apps read it back.
    from service.jose import prefork

    prefork.hand_to_workers(prefork.make(settings.dpop))
    if settings.gateway_policy is not None:
        # Read here so a bad file stops the start with one line, not a crash loop of workers.
        from service.gateway_policy import PolicyError
        from service.gateway_policy import accept_policy

        try:
            accept_policy(settings.gateway_policy, default_dpop=settings.dpop.mode)
        except PolicyError as error:
            _fail(f"GATEWAY_POLICY: {error}")
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    # Files left by an earlier run (an emptyDir survives container restarts) would be summed in.
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def on_reload(server):
    """SIGHUP: re-read the gateway policy before the new workers fork (master).

    The new workers use what this accepted; a file that no longer parses is logged and the
    previous policy stays, so a bad edit cannot take the service down.
    """
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        server.log.error("gateway_policy_invalid: %s", error)
        return
    if settings.gateway_policy is None:
        return
    from service.gateway_policy import PolicyError
    from service.gateway_policy import accept_policy

    try:
        accept_policy(settings.gateway_policy, default_dpop=settings.dpop.mode)
    except PolicyError as error:
        server.log.error("gateway_policy_invalid: GATEWAY_POLICY: %s (the previous policy stays)", error)


def when_ready(server):
    """With METRICS_PORT, serve /metrics from the master on that port (before any worker forks)."""
    try:
        port = metrics_port(os.environ)
    except ConfigError as error:
        _fail(error)
    if not port:
        return
    from service.server import metrics_server

    host = metrics_server.listen_host(server.cfg.address[0])
    try:
        metrics_server.start(host, port, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    except OSError as error:
        _fail(f"METRICS_PORT: cannot listen on {host}:{port}: {error.strerror or error}")
    server.log.info("metrics on http://%s:%d/metrics", host, port)


def post_worker_init(worker):
    """Start fetching the key set in the background as soon as the worker has loaded the app.

    Runs in the worker (after fork, never in the master) and does not wait: the worker serves
    at once, and its first protected request normally finds the keys already there.
    """
    from service.auth import start_key_fetch

    start_key_fetch(worker.wsgi, worker.cfg.threads)


def child_exit(server, worker):
    """Fold a dead worker's metric files into the archive (runs in the master, even after SIGKILL)."""
    from service import metric_files

    metric_files.fold_dead_worker(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)

"""The web console: a live view of alerts, entity risk, ATT&CK tactics, noisy rules and the
cluster, where analysts give verdicts (issue 13).

It reads what the cluster writes and never re-implements the correlator:

    alerts topic (OCSF findings) ─┐                     ┌─► pages (Jinja2, autoescaped; inline SVG charts)
                                  ├─► feed ─► state ────┤
    verdicts topic ───────────────┘  (thread)  (pure)   └─► /events (server-sent events: rows, refreshes)
    input topics ◄── evidence (by topic, partition, offset; bounded) ◄── alert page
    verdicts topic ◄── verdicts (POST, CSRF-checked; acknowledged before the page says so)
    SupervisorHandle.status() ◄── cluster page (optional: "no cluster connected" without one)

Modules: `state` (the pure fold: queue, entity risk, ATT&CK matrix, rules), `feed` (the Kafka
reader thread), `evidence` and `verdicts` (the Kafka reads and writes of one page), `cluster_view`
(status rows and events/s), `auth` (token, sessions, CSRF tokens), `app` (routes, security
headers, live updates), `pages`, `templates`, `charts`, `static` (rendering, no build step),
`redact` (Kafka credentials out of anything shown), `server` (uvicorn in a thread).

Run alone: `sigmaray console --config cluster.yaml` (the URL and a login token are printed once;
set the variable named by `console.token_env` to choose the token). `sigmaray run` starts one
beside the cluster through `cluster.cli.console.start_console`.
"""

# ruff: noqa: E501 - markup and CSS read better one element or rule a line than wrapped to fit
"""The console's page templates (Jinja2, autoescaped: every value, events included, is escaped;
only `cluster.console.charts` output is marked safe). Kept in Python so that the package needs no
data files. Each page's live part sits in an element with `data-fragment`: the page script
re-fetches that part (`?fragment=1`) when the server says it changed.
"""

from __future__ import annotations

BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}sigmaray{% endblock %} · sigmaray console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/">sigmaray</a>
  <nav>
    {% for href, name in nav %}<a href="{{ href }}"{% if href == active %} class="active"{% endif %}>{{ name }}</a>{% endfor %}
  </nav>
  <span class="summary" id="summary">{% include "summary.html" %}</span>
  <span class="live muted" title="live updates">live: <span id="live-status">connecting…</span></span>
  <form method="post" action="/logout" class="logout">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    {% if analyst %}<span class="who">{{ analyst }}</span>{% endif %}
    <button type="submit">Log out</button>
  </form>
</header>
<main{% if stream %} data-stream="{{ stream }}"{% endif %}>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

SUMMARY = """{% for p in ("P1", "P2", "P3", "P4") %}<span class="badge {{ p|lower }}" title="open {{ p }} alerts">{{ p }} {{ summary[p] }}</span>{% endfor %}
<span class="muted">{{ summary.open }} open / {{ summary.total }}</span>"""

LOGIN = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Log in · sigmaray console</title>
<link rel="stylesheet" href="/static/console.css">
</head>
<body class="login">
<form method="post" action="/login" class="card login-form">
  <h1>sigmaray console</h1>
  {% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
  <label>Access token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
  <label>Your name <span class="muted">(recorded with your verdicts)</span>
    <input type="text" name="analyst" maxlength="100" autocomplete="username"></label>
  <button type="submit">Log in</button>
  <p class="muted">The token is the one <code>sigmaray run</code> / <code>sigmaray console</code> printed at start, or the
  value of the environment variable the config's <code>console.token_env</code> names.</p>
</form>
</body>
</html>
"""

QUEUE = """{% extends "base.html" %}
{% block title %}Alert queue{% endblock %}
{% block main %}
<h1>Alert queue</h1>
<form method="get" action="/" class="filters">
  <label>Priority <select name="priority"><option value="">any</option>
    {% for p in (1, 2, 3, 4) %}<option value="{{ p }}"{% if filters.priority == p %} selected{% endif %}>P{{ p }}</option>{% endfor %}
  </select></label>
  <label>Entity <input type="search" name="entity" value="{{ filters.entity }}" placeholder="host or user"></label>
  <label>Tactic <select name="tactic"><option value="">any</option>
    {% for t in tactics %}<option value="{{ t }}"{% if filters.tactic == t %} selected{% endif %}>{{ t }}</option>{% endfor %}
  </select></label>
  <label class="check"><input type="checkbox" name="open" value="1"{% if filters.open_only %} checked{% endif %}> open only</label>
  <button type="submit">Filter</button> <a href="/">clear</a>
</form>
<table class="queue">
<thead><tr><th>Priority</th><th>Alert</th><th>Entity</th><th>Tactics</th><th class="num">Hits</th><th class="num">Risk</th>
<th>Status</th><th>Verdict</th><th>Last seen (UTC)</th></tr></thead>
<tbody id="queue-body" data-limit="{{ limit }}">
{% for alert in alerts %}{% include "row.html" %}{% endfor %}
</tbody>
</table>
<p id="queue-empty" class="muted{% if alerts %} hidden{% endif %}">No alerts{% if filters.any %} match these filters{% endif %} yet. New ones appear here as the correlator raises them.</p>
{% endblock %}
"""

ROW = """<tr id="a-{{ alert.alert_id }}" data-sort="{{ alert.sort_key() }}" class="row {{ alert.label|lower }} {{ alert.status }}">
<td><span class="badge {{ alert.label|lower }}">{{ alert.label }}</span></td>
<td><a href="/alerts/{{ alert.alert_id|urlencode }}">{{ alert.title }}</a>{% set folded = folds.get(alert.alert_id, 0) if folds is defined else 0 %}{% if folded %}
<br><a class="muted folded" href="/?entity={{ alert.host|urlencode }}&amp;priority=4">+{{ folded }} rule record{% if folded != 1 %}s{% endif %} on this host (P4)</a>{% endif %}</td>
<td>{{ alert.host }}{% for user in alert.users %}<br><span class="muted">user</span> {{ user }}{% endfor %}</td>
<td>{% for t in alert.tactics %}<span class="tag">{{ t }}</span> {% endfor %}</td>
<td class="num">{{ alert.count }}</td>
<td class="num">{{ "%.0f"|format(alert.risk) }}</td>
<td>{{ alert.status }}</td>
<td>{% if alert.verdict %}<span class="verdict {{ alert.verdict }}">{{ alert.verdict }}</span>{% endif %}</td>
<td class="time">{{ alert.last_seen_ms|when }}</td>
</tr>"""

ALERT = """{% extends "base.html" %}
{% block title %}{{ alert.label }} {{ alert.title }}{% endblock %}
{% block main %}
<p><a href="/">&larr; queue</a></p>
<div data-fragment="/alerts/{{ alert.alert_id|urlencode }}?fragment=head">{% include "alert_head.html" %}</div>
<section class="card verdict-form">
<h2>Verdict</h2>
{% if notice %}<p class="notice" role="status" id="notice">{{ notice }}</p>{% endif %}
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="/alerts/{{ alert.alert_id|urlencode }}/verdict">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <label>Reason <textarea name="reason" rows="2" maxlength="2000" placeholder="why (kept with the verdict)"></textarea></label>
  <label class="check"><input type="checkbox" name="suppress" value="1" checked> for a false positive, suppress these rules on this entity</label>
  <label>for hours <input type="number" name="suppress_hours" min="1" max="8760" step="1" placeholder="default"></label>
  <div class="buttons">
    <button type="submit" name="verdict" value="tp" class="tp">True positive</button>
    <button type="submit" name="verdict" value="fp" class="fp">False positive</button>
    <button type="submit" name="verdict" value="benign" class="benign">Benign</button>
  </div>
</form>
</section>
<div data-fragment="/alerts/{{ alert.alert_id|urlencode }}?fragment=1">{% include "alert_live.html" %}</div>
<section class="card">
<h2>Evidence events <span class="muted">({{ evidence|length }} of {{ alert.explanation.evidence.total if alert.explanation.evidence else 0 }}, read from Kafka)</span></h2>
{% for item in evidence %}
<details class="event" open>
<summary><code>{{ item.ref }}</code>{% if item.timestamp_ms %} <span class="muted">{{ item.timestamp_ms|when }}</span>{% endif %}
{% if item.error %} <span class="error">{{ item.error }}</span>{% endif %}{% if item.truncated %} <span class="muted">(cut)</span>{% endif %}</summary>
{% if item.event is mapping %}
<table class="fields">{% for key, value in item.event|dictsort %}<tr><th>{{ key }}</th><td><code>{{ value|show }}</code></td></tr>{% endfor %}</table>
{% elif item.event is not none %}<pre>{{ item.event|show }}</pre>{% endif %}
</details>
{% else %}<p class="muted">No evidence references in this alert.</p>{% endfor %}
</section>
<section class="card">
<details><summary>The OCSF Detection Finding (latest record)</summary><pre>{{ alert.finding|pretty }}</pre></details>
</section>
{% endblock %}
"""

ALERT_HEAD = """{% set x = alert.explanation %}
<h1><span class="badge {{ alert.label|lower }}">{{ alert.label }}</span> {{ alert.title }}</h1>
<dl class="facts">
  <dt>Status</dt><dd>{{ alert.status }} ({{ alert.activity }}, record {{ alert.updates }})</dd>
  <dt>Entity</dt><dd>host <a href="/entities?focus={{ alert.host|urlencode }}">{{ alert.host }}</a>{% for user in alert.users %}, user {{ user }}{% endfor %}</dd>
  <dt>Hits</dt><dd>{{ alert.count }}</dd>
  <dt>First / last seen</dt><dd>{{ alert.first_seen_ms|when }} / {{ alert.last_seen_ms|when }}</dd>
  <dt>Risk</dt><dd>{{ "%.1f"|format(alert.risk) }}{% if x.risk %} (host {{ x.risk.host }}{% if x.risk.user is not none %}, user {{ x.risk.user }}{% endif %}){% endif %}</dd>
  <dt>Verdicts</dt><dd>{% for v in alert.verdicts %}<span class="verdict {{ v.verdict }}">{{ v.verdict }}</span> {{ v.reason }}
    <span class="muted">{{ v.analyst }} {{ v.time }}</span><br>{% else %}none yet{% endfor %}</dd>
</dl>
"""

ALERT_LIVE = """{% set x = alert.explanation %}
<div class="grid">
<section class="card">
<h2>Why {{ alert.label }}</h2>
{% set pr = x.priority or {} %}
<ul>{% for reason in pr.reasons or [] %}<li>{{ reason }}</li>{% endfor %}
{% for gate in pr.p1_gates or [] %}<li>P1 gate: {{ gate }}</li>{% endfor %}
{% if pr.demoted %}<li>demoted one step (noisy rule, low anomaly)</li>{% endif %}</ul>
{% if pr.thresholds %}<p class="muted">thresholds: {% for k, v in pr.thresholds|dictsort %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
<p class="muted">{{ x.distinct_tactics_in_window }} distinct tactic(s) in the risk window</p>
</section>
<section class="card">
<h2>Tactics and techniques</h2>
<p>{% for t in alert.tactics %}<span class="tag">{{ t }}</span> {% else %}<span class="muted">none</span>{% endfor %}</p>
<p>{% for t in alert.techniques %}<span class="tag technique">{{ t }}</span> {% endfor %}</p>
</section>
<section class="card">
<h2>Criticality</h2>
{% set c = x.criticality or {} %}
<p>host: {% if c.host %}{{ c.host.criticality }}{% if c.host.role %} ({{ c.host.role }}){% endif %}{% else %}<span class="muted">not listed</span>{% endif %}<br>
user: {% if c.user %}{{ c.user.criticality }}{% if c.user.role %} ({{ c.user.role }}){% endif %}{% else %}<span class="muted">not listed</span>{% endif %}</p>
</section>
<section class="card">
<h2>Anomaly</h2>
{% for name, item in (x.anomaly or {}).items() %}<p><b>{{ name }}</b> score {{ item.score }}</p>
<ul>{% for reason in item.reasons or [] %}<li>{{ reason }}</li>{% endfor %}</ul>
{% else %}<p class="muted">no anomaly score on this alert's entities</p>{% endfor %}
</section>
</div>
<section class="card">
<h2>Contributing rules</h2>
<table><thead><tr><th>Rule</th><th>Level</th><th class="num">Hits</th><th class="num">Points</th><th class="num">Weight</th></tr></thead>
<tbody>{% for rule in alert.rules %}<tr><td>{{ rule.title }} <span class="muted">{{ rule.id }}</span></td><td>{{ rule.level }}</td>
<td class="num">{{ rule.count }}</td><td class="num">{{ rule.points }}</td><td class="num">{{ rule.weight }}</td></tr>{% endfor %}</tbody></table>
</section>
<section class="card">
<h2>The formula's terms</h2>
{% if x.formula %}<p class="formula"><code>{{ x.formula.contribution }}</code></p><p class="formula"><code>{{ x.formula.priority }}</code></p>{% endif %}
{% macro terms(items) %}<table><thead><tr><th>Entity</th><th>Level</th><th class="num">Level pts</th><th class="num">Repeat &times;</th>
<th class="num">Tactic pts</th><th class="num">Technique pts</th><th class="num">Weight</th><th class="num">Anomaly &times;</th>
<th class="num">Criticality &times;</th><th class="num">Points</th><th class="num">Risk before &rarr; after</th></tr></thead>
<tbody>{% for t in items %}<tr><td>{{ t.entity_type }} {{ t.entity }}</td><td>{{ t.level }}</td><td class="num">{{ t.level_points }}</td>
<td class="num">{{ t.repeat_factor }}</td><td class="num">{{ t.tactic_points }}</td><td class="num">{{ t.technique_points }}</td>
<td class="num">{{ t.weight }}</td><td class="num">{{ t.anomaly_multiplier }}</td><td class="num">{{ t.criticality_factor }}</td>
<td class="num">{{ t.points }}</td><td class="num">{{ t.risk_before }} &rarr; {{ t.risk_after }}</td></tr>{% endfor %}</tbody></table>{% endmacro %}
<p class="muted">The last hit's contribution:</p>
{{ terms(x.last_contribution or []) }}
{% if x.contributions %}<details><summary>Every contribution kept ({{ x.contributions|length }} of {{ x.contributions_total or x.contributions|length }})</summary>
{{ terms(x.contributions) }}</details>{% endif %}
</section>
"""

ENTITIES = """{% extends "base.html" %}
{% block title %}Entity risk{% endblock %}
{% block main %}
<h1>Entity risk board</h1>
<div data-fragment="/entities?fragment=1{% if focus %}&amp;focus={{ focus|urlencode }}{% endif %}">{% include "entities_live.html" %}</div>
{% endblock %}
"""

ENTITIES_LIVE = """<p class="muted">Risk as the correlator computed it at each contribution (event time); it decays between them.
"Now" is the last risk decayed to the latest event time read. Guides: P1 / P2 / P3 risk thresholds.</p>
<table class="entities"><thead><tr><th>Entity</th><th class="num">Now</th><th class="num">At last hit</th><th class="num">Peak</th><th>Risk over time</th>
<th>Raised by</th><th>Tactics</th><th class="num">Alerts</th></tr></thead>
<tbody>{% for e in entities %}<tr class="{% if focus and e.name == focus %}focus{% endif %}">
<td><span class="muted">{{ e.entity_type }}</span> <a href="/?entity={{ e.name|urlencode }}">{{ e.name }}</a>
 <span class="badge p{{ e.best_priority }}">P{{ e.best_priority }}</span></td>
<td class="num">{{ "%.1f"|format(e.current) }}</td><td class="num">{{ "%.1f"|format(e.risk) }}</td><td class="num">{{ "%.1f"|format(e.peak) }}</td>
<td>{{ charts[e.entity_type ~ ":" ~ e.name] }}<br><span class="muted">last {{ e.last_ms|when }}</span></td>
<td><ul class="plain">{% for title, points in e.raised_by() %}<li>{{ title }} <span class="muted">+{{ points }}</span></li>{% endfor %}</ul></td>
<td>{% for t in e.tactics|sort %}<span class="tag">{{ t }}</span> {% endfor %}</td>
<td class="num">{{ e.alerts|length }}</td></tr>
{% else %}<tr><td colspan="8" class="muted">No entity has risk yet.</td></tr>{% endfor %}</tbody></table>
"""

ATTACK = """{% extends "base.html" %}
{% block title %}ATT&amp;CK{% endblock %}
{% block main %}
<h1>ATT&amp;CK: tactics &times; entities</h1>
<form method="get" action="/attack" class="filters"><label>Last <select name="hours">
{% for h in (1, 6, 24, 72, 168) %}<option value="{{ h }}"{% if h == hours %} selected{% endif %}>{{ h }} h</option>{% endfor %}
</select></label> <button type="submit">Show</button></form>
<div data-fragment="/attack?fragment=1&amp;hours={{ hours }}">{% include "attack_live.html" %}</div>
{% endblock %}
"""

ATTACK_LIVE = """<p class="muted">Alerts whose last hit falls in the {{ hours }} h before the latest event time read
({{ matrix.until_ms|when }} UTC); a cell counts an entity's alerts with that tactic, coloured by their best priority.
A row filling left to right is a kill chain forming.</p>
{% if matrix.entities %}
<table class="matrix"><thead><tr><th>Entity</th><th class="num">Tactics</th>{% for t in matrix.tactics %}<th class="tactic">{{ t }}</th>{% endfor %}</tr></thead>
<tbody>{% for name in matrix.entities %}<tr><th><span class="muted">{{ matrix.types[name] }}</span> <a href="/?entity={{ name|urlencode }}">{{ name }}</a></th>
<td class="num">{{ matrix.hit_tactics(name) }}</td>
{% for t in matrix.tactics %}{% set cell = matrix.cells.get((name, t)) %}
<td class="{% if cell %}hit p{{ cell.priority }}{% endif %}">{% if cell %}<a href="/?entity={{ name|urlencode }}&amp;tactic={{ t|urlencode }}" title="{{ cell.alerts }} alert(s), best P{{ cell.priority }}">{{ cell.alerts }}</a>{% endif %}</td>
{% endfor %}</tr>{% endfor %}</tbody></table>
{% else %}<p class="muted">No alert with an ATT&amp;CK tactic in this window.</p>{% endif %}
"""

RULES = """{% extends "base.html" %}
{% block title %}Rules{% endblock %}
{% block main %}
<h1>Rules</h1>
<div data-fragment="/rules?fragment=1">{% include "rules_live.html" %}</div>
{% endblock %}
"""

RULES_LIVE = """<p class="muted">The rules in the most alerts. A rule whose alerts are rarely P1&ndash;P2 and often marked false
positive is one to tune.</p>
<table><thead><tr><th>Rule</th><th>Level</th><th class="num">Alerts</th><th class="num">Hits</th><th>Share P1&ndash;P2</th>
<th>Share marked FP</th></tr></thead>
<tbody>{% for r in rules %}<tr><td>{{ r.title }} <span class="muted">{{ r.rule_id }}</span></td><td>{{ r.level }}</td>
<td class="num">{{ r.alerts }}</td><td class="num">{{ r.hits }}</td>
<td>{{ bar(r.high_share, css="high") }} {{ "%.0f"|format(100 * r.high_share) }}%</td>
<td>{{ bar(r.fp_share, css="fp") }} {{ "%.0f"|format(100 * r.fp_share) }}%</td></tr>
{% else %}<tr><td colspan="6" class="muted">No alerts yet.</td></tr>{% endfor %}</tbody></table>
"""

CLUSTER = """{% extends "base.html" %}
{% block title %}Cluster{% endblock %}
{% block main %}
<h1>Cluster</h1>
<div data-fragment="/cluster?fragment=1">{% include "cluster_live.html" %}</div>
{% endblock %}
"""

CLUSTER_LIVE = """{% if cluster.connected %}
{% set t = cluster.totals %}
<dl class="facts">
<dt>Workers</dt><dd>{{ t.workers }}</dd><dt>Partitions</dt><dd>{{ t.partitions }}</dd>
<dt>Events in</dt><dd>{{ t.events_in }}{% if t.events_per_s is not none %} ({{ t.events_per_s }} events/s){% endif %}</dd>
<dt>Consumer lag</dt><dd>{{ t.lag }}</dd><dt>Dead letters</dt><dd>{{ t.dead_letters }}</dd>
<dt>Ruleset versions</dt><dd>{{ t.rulesets|join(", ") or "-" }}</dd><dt>Models</dt><dd>{{ t.models|join(", ") or "-" }}</dd>
<dt>Worker restarts</dt><dd>{{ cluster.restarts }}{% if cluster.last_error %} <span class="error">{{ cluster.last_error }}</span>{% endif %}</dd>
</dl>
<table><thead><tr><th>Worker</th><th class="num">Events in</th><th class="num">Events/s</th><th class="num">Detections</th>
<th class="num">Anomalies</th><th class="num">Dead letters</th><th class="num">Lag</th><th class="num">Batch ms</th><th>Ruleset</th>
<th>Model</th><th>Partitions</th></tr></thead>
<tbody>{% for w in cluster.workers %}<tr><td>{{ w.worker }}{% if w.error %}<br><span class="error">{{ w.error }}</span>{% endif %}</td>
<td class="num">{{ w.events_in }}</td><td class="num">{{ w.events_per_s if w.events_per_s is not none else "-" }}</td>
<td class="num">{{ w.detections_out }}</td><td class="num">{{ w.anomalies_out }}</td>
<td class="num">{{ w.dead_letters }}{% for stage, n in w.dead_letters_by_stage|dictsort %}<br><span class="muted">{{ stage }} {{ n }}</span>{% endfor %}</td>
<td class="num">{{ w.lag }}</td><td class="num">{{ w.last_batch_ms }}</td><td>{{ w.ruleset_version }}</td><td>{{ w.model or "-" }}</td>
<td>{{ w.partitions|join(", ") }}{% for rule, why in w.degraded_rules|dictsort %}<br><span class="error">degraded {{ rule }}: {{ why }}</span>{% endfor %}</td></tr>
{% endfor %}</tbody></table>
{% if cluster.correlators %}
<h2>Correlators</h2>
<table><thead><tr><th>Correlator</th><th class="num">Detections in</th><th class="num">Alerts out</th><th>By priority</th>
<th class="num">Correlation hits</th><th>Verdicts applied</th><th class="num">Dead letters</th><th class="num">Lag</th><th>Partitions</th></tr></thead>
<tbody>{% for c in cluster.correlators %}<tr><td>{{ c.worker }}{% if c.error %}<br><span class="error">{{ c.error }}</span>{% endif %}</td>
<td class="num">{{ c.detections_in }}</td><td class="num">{{ c.alerts_out }}</td>
<td>{% for p, n in c.alerts_by_priority|dictsort %}<span class="badge {{ p|lower }}">{{ p }}</span> {{ n }} {% endfor %}</td>
<td class="num">{{ c.correlations_out }}</td><td>{% for v, n in c.verdicts|dictsort %}{{ v }} {{ n }} {% endfor %}</td>
<td class="num">{{ c.dead_letters }}</td><td class="num">{{ c.lag }}</td><td>{{ c.partitions|join(", ") }}</td></tr>
{% endfor %}</tbody></table>
{% endif %}
{% else %}
<p class="muted" id="no-cluster">{{ cluster.error }}</p>
{% endif %}
<h2>Console feed</h2>
<dl class="facts">
<dt>Topics read</dt><dd>{{ feed.topics|join(", ") }}</dd>
<dt>Records read</dt><dd>{{ feed.counts.records or 0 }}{% if feed.seconds_since_record is number %} (last {{ feed.seconds_since_record }} s ago){% endif %}</dd>
<dt>Alerts kept</dt><dd>{{ state.alerts }} ({{ state.entities }} entities)</dd>
<dt>Skipped records</dt><dd>{% for why, n in state.skipped|dictsort %}{{ why }}: {{ n }}<br>{% else %}none{% endfor %}</dd>
{% if feed.last_error %}<dt>Feed error</dt><dd class="error">{{ feed.last_error }}</dd>{% endif %}
</dl>
"""

TEMPLATES = {
    "base.html": BASE, "summary.html": SUMMARY, "login.html": LOGIN, "queue.html": QUEUE, "row.html": ROW,
    "alert.html": ALERT, "alert_head.html": ALERT_HEAD, "alert_live.html": ALERT_LIVE, "entities.html": ENTITIES, "entities_live.html": ENTITIES_LIVE,
    "attack.html": ATTACK, "attack_live.html": ATTACK_LIVE, "rules.html": RULES, "rules_live.html": RULES_LIVE,
    "cluster.html": CLUSTER, "cluster_live.html": CLUSTER_LIVE,
}

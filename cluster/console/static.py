# ruff: noqa: E501 - markup and CSS read better one element or rule a line than wrapped to fit
"""The console's stylesheet and script, served from memory (no build step, no download, no CDN).

The script is small on purpose: it opens the page's server-sent-event stream and
- on `row`, puts the server-rendered (escaped) row of an alert in its place in the queue
  (in place if shown, else sorted in by its `data-sort` key), and marks it fresh;
- on `remove`, drops a row that no longer matches the filters;
- on `refresh`, re-fetches the page's live fragment(s) (`data-fragment`) and the header summary;
- on `reload`, reloads the page (the server's change log no longer reaches back far enough).
It never builds markup from data itself: the server escapes, the script only places.
"""

from __future__ import annotations

CSS = """
:root { --bg:#0f1419; --card:#182028; --line:#2a3540; --text:#dce3ea; --muted:#8a99a8; --link:#7cc4ff;
  --p1:#e5484d; --p2:#f5a524; --p3:#e5d14a; --p4:#5d9cec; --ok:#46a758; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
a { color:var(--link); text-decoration:none; } a:hover { text-decoration:underline; }
header.top { display:flex; gap:18px; align-items:center; padding:8px 16px; background:#0b0f13; border-bottom:1px solid var(--line);
  position:sticky; top:0; z-index:2; flex-wrap:wrap; }
.brand { font-weight:700; font-size:16px; color:var(--text); }
nav a { margin-right:12px; color:var(--muted); } nav a.active { color:var(--text); font-weight:600; }
.summary { margin-left:auto; display:flex; gap:6px; align-items:center; } .logout { display:flex; gap:8px; align-items:center; }
main { padding:12px 16px 40px; } .live { font-size:12px; }
h1 { font-size:20px; margin:6px 0 12px; display:flex; gap:10px; align-items:center; } h2 { font-size:15px; margin:14px 0 8px; } .card h2 { margin-top:4px; }
table { border-collapse:collapse; width:100%; } th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; } th { color:var(--muted); font-weight:600; } td.num, th.num { text-align:right; }
.muted { color:var(--muted); } .hidden { display:none; } .error { color:var(--p1); } .notice { color:var(--ok); }
.badge { display:inline-block; min-width:28px; padding:1px 6px; border-radius:4px; font-weight:700; font-size:12px;
  text-align:center; color:#111; }
.badge.p1 { background:var(--p1); color:#fff; } .badge.p2 { background:var(--p2); } .badge.p3 { background:var(--p3); }
.badge.p4 { background:var(--p4); }
.tag { display:inline-block; padding:0 6px; margin:1px 0; border:1px solid var(--line); border-radius:10px; font-size:12px; }
.tag.technique { border-style:dashed; }
tr.row.closed td { opacity:.6; } tr.fresh td { animation: fresh 3s ease-out; }
@keyframes fresh { from { background:#2c4a66; } to { background:transparent; } }
.verdict { font-weight:700; text-transform:uppercase; font-size:12px; } .verdict.tp { color:var(--p1); }
.verdict.fp { color:var(--ok); } .verdict.benign { color:var(--p4); }
.filters { display:flex; gap:12px; align-items:end; margin-bottom:10px; flex-wrap:wrap; }
label { display:flex; flex-direction:column; gap:2px; color:var(--muted); font-size:12px; }
label.check { flex-direction:row; align-items:center; gap:6px; }
input, select, textarea, button { font:inherit; color:var(--text); background:#0b0f13; border:1px solid var(--line);
  border-radius:4px; padding:4px 8px; }
button { cursor:pointer; background:#22303c; } button:hover { background:#2d3f4f; }
button.tp { border-color:var(--p1); } button.fp { border-color:var(--ok); } button.benign { border-color:var(--p4); }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin:10px 0; }
.grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(260px, 1fr)); gap:0 12px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:0 0 10px; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; }
.verdict-form form { display:flex; flex-direction:column; gap:8px; max-width:720px; } .buttons { display:flex; gap:10px; }
pre, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size:12px; white-space:pre-wrap;
  word-break:break-all; } .formula code { color:var(--muted); }
details.event { border-top:1px solid var(--line); padding:6px 0; } table.fields th { width:220px; }
svg.chart .line { fill:none; stroke:var(--link); stroke-width:1.5; } svg.chart circle { fill:var(--link); }
svg.chart .guide { stroke-dasharray:3 3; stroke-width:1; } svg.chart .guide.p1 { stroke:var(--p1); }
svg.chart .guide.p2 { stroke:var(--p2); } svg.chart .guide.p3 { stroke:var(--p3); }
svg.bar .track { fill:#0b0f13; } svg.bar .fill { fill:var(--p4); } svg.bar.high .fill { fill:var(--p2); }
svg.bar.fp .fill { fill:var(--ok); } ul.plain { margin:0; padding-left:16px; }
table.matrix th.tactic { writing-mode:vertical-rl; transform:rotate(180deg); white-space:nowrap; font-size:12px; }
table.matrix { width:auto; } table.matrix td { text-align:center; min-width:38px; border-left:1px solid var(--line); } table.matrix td.hit.p1 { background:#5a1d1f; }
table.matrix td.hit.p2 { background:#5a3d0c; } table.matrix td.hit.p3 { background:#4d4614; } table.matrix td.hit.p4 { background:#1e3650; }
tr.focus td { background:#1d2a36; }
body.login { display:flex; align-items:center; justify-content:center; min-height:100vh; }
.login-form { display:flex; flex-direction:column; gap:12px; width:380px; }
"""

JS = """
(() => {
  'use strict';
  const main = document.querySelector('main[data-stream]');
  const status = document.getElementById('live-status');
  if (!main) { if (status) status.textContent = 'off'; return; }
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      for (const part of document.querySelectorAll('[data-fragment]')) {
        const response = await fetch(part.dataset.fragment, {credentials: 'same-origin', cache: 'no-store'});
        if (response.ok) part.innerHTML = await response.text();
      }
    } finally { busy = false; if (again) { again = false; refresh(); } }
  }
  function fromHtml(html) {
    const template = document.createElement('template');
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }
  function upsert(data) {
    const body = document.getElementById('queue-body');
    if (!body) return;
    const row = fromHtml(data.html);
    const old = document.getElementById(row.id);
    if (old) old.remove();
    let before = null;
    for (const other of body.children) {
      if (other.dataset.sort > row.dataset.sort) { before = other; break; }
    }
    body.insertBefore(row, before);
    row.classList.add('fresh');
    const limit = Number(body.dataset.limit || 500);
    while (body.children.length > limit) body.lastElementChild.remove();
    const empty = document.getElementById('queue-empty');
    if (empty) empty.classList.toggle('hidden', body.children.length > 0);
  }
  const source = new EventSource(main.dataset.stream, {withCredentials: true});
  source.addEventListener('open', () => { status.textContent = 'connected'; });
  source.addEventListener('error', () => {
    // The browser retries by itself unless the server refused (console restarted: session gone);
    // then a reload lands on the login page.
    status.textContent = source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…';
    if (source.readyState === EventSource.CLOSED) setTimeout(() => window.location.reload(), 5000);
  });
  source.addEventListener('row', (event) => upsert(JSON.parse(event.data)));
  source.addEventListener('remove', (event) => {
    const row = document.getElementById('a-' + JSON.parse(event.data).id);
    if (row) row.remove();
  });
  source.addEventListener('summary', (event) => {
    const summary = document.getElementById('summary');
    if (summary) summary.innerHTML = JSON.parse(event.data).html;
  });
  source.addEventListener('refresh', () => refresh());
  source.addEventListener('reload', () => window.location.reload());
  source.addEventListener('login', () => { window.location.href = '/login'; });
})();
"""

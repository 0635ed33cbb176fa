// mediabot admin panel. Loaded from our own origin (the CSP allows no inline script).
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Jobs page: refresh the table body in place. The server renders the rows (escaped), so
  // this only swaps trusted markup from our own origin.
  const rows = document.getElementById('job-rows');
  if (rows && rows.dataset.refresh) {
    setInterval(async () => {
      try {
        const r = await fetch(rows.dataset.refresh, { credentials: 'same-origin' });
        if (r.ok) rows.innerHTML = await r.text();
      } catch (e) { /* offline for a moment: try again on the next tick */ }
    }, 5000);
  }
  // Broadcast page: move the progress bar and counters while it sends.
  const bar = document.getElementById('bc-progress');
  if (bar && bar.dataset.refresh) {
    const tick = async () => {
      try {
        const r = await fetch(bar.dataset.refresh, { credentials: 'same-origin' });
        if (!r.ok) return;
        const p = await r.json();
        bar.max = Math.max(p.total, 1);
        bar.value = p.handled;
        for (const k of ['state', 'total', 'sent', 'blocked', 'failed']) {
          const el = document.getElementById('bc-' + k);
          if (el) el.textContent = String(p[k]);
        }
        if (p.state !== 'sending' && p.state !== 'draft') clearInterval(timer);
      } catch (e) { /* try again on the next tick */ }
    };
    const timer = setInterval(tick, 1000);
  }
  // Forms that need a second thought (ban).
  for (const f of document.querySelectorAll('form.confirm')) {
    f.addEventListener('submit', (ev) => {
      if (!window.confirm(f.dataset.confirm || 'Sure?')) ev.preventDefault();
    });
  }
});
